"""One generation path: settings → pipeline → batches of scenes → images + records, resumable.

``interactdiffusion-generate``, ``interactdiffusion-eval``, the training callbacks and the layout app
all draw images through these modules, so the same settings give the same image everywhere:

- ``settings``: the settings record of ``generate.yaml`` (kept with every image), checked;
- ``scenes``: the scene file read and validated, output names, batches;
- ``building``: the pipeline built from a backbone + weights (or from a training module);
- ``sampling``: the one call into the pipeline;
- ``metadata``: ``metadata.jsonl`` I/O, the folder lock and the resume plan.
"""

from .building import (
    PipelineError,
    build_pipeline,
    load_generation_pipeline,
    module_pipeline,
    prepare_phrases,
)
from .metadata import METADATA_NAME, append_line, folder_lock, image_record, plan_resume, read_metadata
from .sampling import call_pipeline, finite_images, sample
from .scenes import batches, check_ids, load_input, output_names, scene_size
from .settings import InputError, Settings, read_settings, resolve_device

__all__ = [
    "METADATA_NAME",
    "InputError",
    "PipelineError",
    "Settings",
    "append_line",
    "batches",
    "build_pipeline",
    "call_pipeline",
    "check_ids",
    "finite_images",
    "folder_lock",
    "image_record",
    "load_generation_pipeline",
    "load_input",
    "module_pipeline",
    "output_names",
    "plan_resume",
    "prepare_phrases",
    "read_metadata",
    "read_settings",
    "resolve_device",
    "sample",
    "scene_size",
]
