"""Paper A's published numbers (Xu et al., ECCV 2024), as quoted in the design notes' METHOD.md.

Printed beside ours in the evaluation report and always marked as quoted: they were measured by the paper's
authors on their test sets (real rain, RTTS, Snow100K-realistic) with their resize policy, which the paper does not
state, so they compare with ours only in spirit. METHOD.md quotes the "Overall" column only.
"""

from __future__ import annotations

#: Where the quoted rows come from, printed under every table that shows them.
SOURCE = "Xu et al., ECCV 2024 (Paper A), the Overall column of its Tables 1 and 2 and of its ablation"

#: method -> {metric: Overall value} (NIMA / MUSIQ / CLIP-IQA / LIQE / Q-Align / VLM-Vis).
PUBLISHED_OVERALL: dict[str, dict[str, float]] = {
    "Restormer": {
        "nima": 4.992,
        "musiq": 56.38,
        "clipiqa": 0.438,
        "liqe": 2.456,
        "qalign": 3.503,
        "vlm_vis": 0.343,
    },
    "PromptIR": {
        "nima": 5.009,
        "musiq": 56.07,
        "clipiqa": 0.443,
        "liqe": 2.437,
        "qalign": 3.491,
        "vlm_vis": 0.343,
    },
    "DA-CLIP": {
        "nima": 5.010,
        "musiq": 55.59,
        "clipiqa": 0.412,
        "liqe": 2.438,
        "qalign": 3.480,
        "vlm_vis": 0.346,
    },
    "Paper A": {
        "nima": 5.084,
        "musiq": 59.34,
        "clipiqa": 0.456,
        "liqe": 2.640,
        "qalign": 3.574,
        "vlm_vis": 0.387,
    },
}

#: The ablation's metrics, and its rows in the paper's order (each row adds one component to the one above).
ABLATION_METRICS: tuple[str, ...] = ("musiq", "clipiqa", "vlm_vis")
PUBLISHED_ABLATION: dict[str, dict[str, float]] = {
    "L_sup only": {"musiq": 53.41, "clipiqa": 0.388, "vlm_vis": 0.343},
    "+ L_ps": {"musiq": 54.08, "clipiqa": 0.396, "vlm_vis": 0.354},
    "+ r_vlm in selection": {"musiq": 56.68, "clipiqa": 0.429, "vlm_vis": 0.366},
    "+ init": {"musiq": 57.34, "clipiqa": 0.425, "vlm_vis": 0.370},
    "+ L_wpl": {"musiq": 58.13, "clipiqa": 0.437, "vlm_vis": 0.376},
    "+ L_sem": {"musiq": 58.91, "clipiqa": 0.445, "vlm_vis": 0.381},
    "+ iterative updates": {"musiq": 59.34, "clipiqa": 0.456, "vlm_vis": 0.387},
}
