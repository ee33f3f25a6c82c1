"""An app that cannot be imported: its import raises."""
import json

SETTINGS = json.loads('{"debug": true,}')  # a typo: trailing comma


def application(environ, start_response):
    start_response('200 OK', [])
    return [b'never served']
