"""The flask-sock extension: blueprints declare WebSocket routes on `sock`, and create_app binds it to the app."""
from flask_sock import Sock

sock = Sock()
