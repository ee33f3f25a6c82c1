"""serviceb: a small FastAPI service served by Hearth's `asgi` directive.

Path, query and body validation come from FastAPI; /events streams
server-sent events as they are produced; startup runs in the ASGI lifespan,
before the worker takes requests."""
import asyncio
import os

from fastapi import FastAPI
from fastapi.responses import StreamingResponse
from pydantic import BaseModel

app = FastAPI(title='serviceb')
notes = []


class Note(BaseModel):
    text: str
    priority: int = 0


@app.on_event('startup')
async def startup():
    app.state.worker = os.getpid()


@app.get('/notes/{index}')
async def get_note(index: int):
    if not 0 <= index < len(notes):
        return {'error': 'no such note', 'count': len(notes)}
    return notes[index]


@app.post('/notes')
async def add_note(note: Note):
    notes.append(note.dict())
    return {'index': len(notes) - 1, 'worker': app.state.worker}


@app.get('/events')
async def events(count: int = 3):
    async def stream():
        for i in range(count):
            yield 'data: tick %d\n\n' % i
            await asyncio.sleep(0.1)
    return StreamingResponse(stream(), media_type='text/event-stream')
