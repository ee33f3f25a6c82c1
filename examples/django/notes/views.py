from django.shortcuts import redirect, render

from .forms import NoteForm
from .models import Note


def index(request):
    """GET: the form and the notes; POST: create a note, then redirect (PRG)."""
    if request.method == "POST":
        form = NoteForm(request.POST)
        if form.is_valid():
            form.save()
            return redirect("index")
    else:
        form = NoteForm()
    return render(request, "notes/index.html", {"form": form, "notes": Note.objects.all()[:50]})
