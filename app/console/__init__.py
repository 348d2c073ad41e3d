"""The staff console (README, Console): the help article's Campaign → Contacts page, as static
files the API process serves at `/console`. It speaks only the public REST API and the live
stream, so it is also an example front end."""
