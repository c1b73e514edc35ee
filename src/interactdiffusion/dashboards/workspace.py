"""The saved wandb workspace of a project: the panels a researcher reads, built from code.

``build_workspace(entity, project)`` returns a ``wandb_workspaces`` ``Workspace`` (nothing is sent);
``interactdiffusion-dashboard`` saves it. Sections, top to bottom:

- **Training**: ``train/loss``, ``train/lr``, ``train/grad_norm``, ``train/samples_per_s`` against the step;
- **HOI mAP**: the periodic evaluation's ``eval/map_*`` curves (first protocol) against the step;
- **Samples**: ``samples/images`` (generated beside real, boxes per role) and an eval row's ``eval/gallery``;
- **Eval tables**: the per-class AP table and the row's mAP table (``eval/per_class_ap``, ``eval/map_table``).

The runs table is grouped by wandb group (a table, a sweep) and pins the paper's columns
(``eval/fgahoi/map_{default,known_object}_{full,rare,non_rare}``, FID, KID), so it reads as the table.
"""

from __future__ import annotations

from ..evaluation.report import SETTINGS, SPLITS
from .eval_tables import GALLERY_KEY, PER_CLASS_KEY
from .logger import MAP_TABLE_KEY, SAMPLES_KEY

TRAINING_CURVES = ("train/loss", "train/lr", "train/grad_norm", "train/samples_per_s")
STEP = "trainer/global_step"
TABLE_PROTOCOL = "fgahoi"


def paper_columns(protocol: str = TABLE_PROTOCOL) -> list[str]:
    return ["summary:eval/fid", "summary:eval/kid_mean"] + [
        f"summary:eval/{protocol}/map_{setting}_{split}" for setting in SETTINGS for split in SPLITS]


def build_workspace(entity: str, project: str, name: str = "InteractDiffusion"):
    import wandb_workspaces.reports.v2 as wr
    import wandb_workspaces.workspaces as ws

    training = [wr.LinePlot(title=key, x=STEP, y=[key]) for key in TRAINING_CURVES]
    curves = [wr.LinePlot(title=f"eval/map_{setting}_{split}", x=STEP, y=[f"eval/map_{setting}_{split}"])
              for setting in SETTINGS for split in SPLITS]
    media = [
        wr.MediaBrowser(title="training samples (generated | real)", media_keys=[SAMPLES_KEY], num_columns=2),
        wr.MediaBrowser(title="eval gallery (GT + detections)", media_keys=[f"eval/{GALLERY_KEY}"], num_columns=4),
    ]
    tables = [
        wr.WeavePanelSummaryTable(table_name=f"eval/{MAP_TABLE_KEY}", layout=wr.Layout(w=24, h=8)),
        wr.WeavePanelSummaryTable(table_name=f"eval/{PER_CLASS_KEY}", layout=wr.Layout(w=24, h=16)),
    ]
    return ws.Workspace(
        entity=entity,
        project=project,
        name=name,
        sections=[
            ws.Section(name="Training", panels=training, is_open=True),
            ws.Section(name="HOI mAP", panels=curves, is_open=True),
            ws.Section(name="Samples", panels=media, is_open=True),
            ws.Section(name="Eval tables", panels=tables, is_open=True),
        ],
        settings=ws.WorkspaceSettings(x_axis=STEP),
        runset_settings=ws.RunsetSettings(groupby=[ws.Metric("Group")], pinned_columns=paper_columns()),
    )
