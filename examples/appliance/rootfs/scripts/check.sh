#!/bin/sh
# Answers 0 when the appliance's web server responds on this node.
exec wget -q -O /dev/null "http://127.0.0.1:${APP_PORT:-8080}/"
