from fastapi import APIRouter

router = APIRouter(tags=["contact_lists"])
