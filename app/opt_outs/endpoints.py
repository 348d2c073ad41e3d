from fastapi import APIRouter

router = APIRouter(tags=["opt_outs"])
