"""A Flask app told to believe the proxy headers (werkzeug's ProxyFix), as
guides for running behind nginx say: it builds a password-reset link from
the host and scheme they name, and reports the client's address."""
from flask import Flask, jsonify, request, url_for
from werkzeug.middleware.proxy_fix import ProxyFix

app = Flask(__name__)
app.wsgi_app = ProxyFix(app.wsgi_app, x_for=1, x_proto=1, x_host=1)


@app.route('/reset')
def reset():
    return jsonify(link=url_for('reset', token='TOKEN', _external=True), remote_addr=request.remote_addr,
                   proxy_headers=sorted(k for k in request.environ if k.startswith(('HTTP_X_FORWARDED', 'HTTP_FORWARDED', 'HTTP_X_REAL_IP'))))
