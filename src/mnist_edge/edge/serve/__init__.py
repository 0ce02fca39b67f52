"""`mnist-edge serve`: the model kept loaded behind a small HTTP API and a drawing page.

Two kinds of process. The server process (server.py, app.py, engine.py) speaks HTTP through Uvicorn and
Starlette and never imports numpy, Pillow or ONNX Runtime. Worker processes (worker.py) decode and
preprocess the images with the same code as `mnist-edge predict` and run the model, one ONNX Runtime
run per batch of the requests that arrived together, so the HTTP work and the image work each get a
core. Needs the `serve` extra: pip install 'mnist-edge[serve]'.
"""
