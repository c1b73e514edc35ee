"""wandb dashboards on wandb's own types.

- ``media``: scenes and detections as ``wandb.Image`` box overlays (subject, object, action roles);
- ``logger``: the ``WandbLogger`` the configs build (flattened config, sample grids, eval rows);
- ``eval_tables``: the per-class AP ``wandb.Table`` and an eval row's gallery;
- ``run_naming``: Hydra resolvers for a sweep's wandb group, run name and tags;
- ``offline``: closing a run with the ``wandb sync`` command, and reading an offline run back;
- ``workspace``: the saved workspace layout (``interactdiffusion-dashboard``).

Nothing here is imported by the models, data or evaluation layers; wandb is imported lazily.
"""
