"""`mnist-edge serve`: the model kept loaded behind a small HTTP API and a drawing page.

Two kinds of process. Worker processes (worker.py) hold the model: they prepare the uploaded images with
the same code as `mnist-edge predict` (prepare.py) and run one ONNX Runtime run per batch of the requests
that arrived together. The server process (server.py, app.py, engine.py) speaks HTTP through Uvicorn and
Starlette, batches the images for the workers, and prepares waiting images itself only while every worker is
busy; it never loads ONNX Runtime. Needs the `serve` extra (Starlette, Uvicorn, python-multipart).
"""
