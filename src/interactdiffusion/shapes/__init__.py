"""HOI-Shapes: a synthetic interaction benchmark that runs the whole framework on a laptop.

Small scenes of persons and objects whose *action* is drawn only in the between box of subject and
object, written as a real HICO-DET (``anno_bbox.mat``, ``instances_*.json``, PNG images) so the
ordinary parsers, datamodule, layout export and evaluator run on it unchanged; and an analytic HOI
detector that reads the scenes back (100 mAP on the real test images).

    interactdiffusion-data make-shapes --out data/hoi-shapes [--check]   # the data set
    data=shapes / detector=shapes                                        # the Hydra configs

Modules: ``world`` (classes, colours, frequencies), ``layout`` (scene sampling), ``render``
(drawing), ``dataset`` (writing to disk), ``datamodule``, ``detector``, ``cli``.
"""
