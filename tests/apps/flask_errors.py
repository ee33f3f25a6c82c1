"""A Flask app whose view raises (debug off)."""
from flask import Flask

app = Flask(__name__)


@app.route('/boom')
def boom():
    raise RuntimeError('hearth-test-flask-view-failed')
