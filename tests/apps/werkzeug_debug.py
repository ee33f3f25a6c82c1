"""A Flask app run with Werkzeug's interactive debugger (what `debug=True`
does): an exception returns the debugger page with its console."""
from flask import Flask
from werkzeug.debug import DebuggedApplication

app = Flask(__name__)
app.debug = True  # exceptions reach the debugger, as with `flask run --debug`


@app.route('/boom')
def boom():
    raise RuntimeError('the secret is hunter2')


@app.route('/')
def index():
    return 'hello'


application = DebuggedApplication(app, evalex=True)
