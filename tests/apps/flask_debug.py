"""A Flask app left in debug mode, with a weak key."""
from flask import Flask

app = Flask(__name__)
app.debug = True
app.config['SECRET_KEY'] = 'dev'


@app.route('/')
def index():
    return 'hello'
