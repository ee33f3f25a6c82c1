"""A FastAPI app whose endpoint raises."""
from fastapi import FastAPI

app = FastAPI()


@app.get('/boom')
def boom():
    raise RuntimeError('hearth-test-asgi-view-failed')
