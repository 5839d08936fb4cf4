"""The NGINX gateway: its config renderer and the OpenAPI document it serves."""
