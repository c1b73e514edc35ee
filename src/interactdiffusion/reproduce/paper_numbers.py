"""The paper's table (REFERENCE §5): what our rows are compared with.

The paper scored every row with FGAHOI (Swin-T and Swin-L backbones) under the FGAHOI-compatible protocol and
published Full and Rare only. A number measured with another detector (QPIC) is not comparable with these;
the aggregated table says so on every column.
"""

from __future__ import annotations

PAPER_DETECTOR = "FGAHOI"
PAPER_PROTOCOL = "fgahoi"

# row -> {"fid", "kid", "swin_t": {"default": (full, rare), "known_object": (full, rare)}, "swin_l": {...}}
PAPER_TABLE: dict[str, dict] = {
    "sd14": {
        "label": "Stable Diffusion 1.4",
        "fid": 35.85, "kid": 0.01297,
        "swin_t": {"default": (0.63, 0.68), "known_object": (0.66, 0.70)},
        "swin_l": {"default": (0.64, 0.83), "known_object": (0.65, 0.84)},
    },
    "gligen": {
        "label": "GLIGEN",
        "fid": 29.35, "kid": 0.01275,
        "swin_t": {"default": (21.73, 15.35), "known_object": (23.31, 17.24)},
        "swin_l": {"default": (23.99, 19.56), "known_object": (24.99, 20.37)},
    },
    "gligen_star": {
        "label": "GLIGEN* (fine-tuned on HICO-DET)",
        "fid": 18.82, "kid": 0.00694,
        "swin_t": {"default": (25.23, 17.45), "known_object": (26.66, 18.78)},
        "swin_l": {"default": (26.45, 18.93), "known_object": (27.32, 19.90)},
    },
    "interactdiffusion": {
        "label": "InteractDiffusion",
        "fid": 18.69, "kid": 0.00676,
        "swin_t": {"default": (29.53, 23.02), "known_object": (30.99, 24.93)},
        "swin_l": {"default": (31.56, 26.09), "known_object": (32.52, 27.04)},
    },
    # InteractDiffusion-XL (REFERENCE §9): only Swin-L Default Full was published (Rare: None).
    "interactdiffusion_xl": {
        "label": "InteractDiffusion-XL",
        "fid": 16.65, "kid": 0.00560,
        "swin_t": None,
        "swin_l": {"default": (35.60, None), "known_object": (None, None)},
    },
    "real": {
        "label": "real HICO-DET images",
        "fid": None, "kid": None,
        "swin_t": {"default": (29.94, 22.24), "known_object": (32.48, 24.16)},
        "swin_l": {"default": (37.18, 30.71), "known_object": (38.93, 31.93)},
    },
}
# Rows we add that have no paper number (our own trained adapter).
ROW_ORDER = ["sd14", "gligen", "gligen_star", "interactdiffusion", "interactdiffusion_ours", "interactdiffusion_xl",
             "real"]
