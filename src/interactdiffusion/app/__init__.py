"""``interactdiffusion-app``: a local layout editor (draw boxes, name triplets, generate, export scenes).

``layout`` converts between the page and a ``Scene``, ``model`` loads and runs the generate CLI's
pipeline, ``ui`` is the Gradio page and ``launch`` starts it.
"""
