"""The paper's Table 1 as printed (RMSE in px by argmax at 256 px; its text calls the unit mm).

``TABLE_1[split][strategy]`` is the (8,) per-landmark RMSEs L1-L8, or None where the paper prints
DIV. Its "Mean" column is the arithmetic mean of them (``components.statistics.paper_mean`` gives
8.58, 20.82, 8.45, 5.58, 11.73, 5.09, as printed); ``PRINTED_MEANS`` keeps the printed values.
"""

__all__ = ["IMAGE_SIZE", "PRINTED_MEANS", "TABLE_1"]

IMAGE_SIZE = 256  # px: the resolution of the paper's errors
TABLE_1 = {
    "novel_view": {
        "baseline": (11.49, 4.71, 12.34, 16.66, 5.43, 6.87, 6.00, 5.17),
        "composite": (39.95, 13.83, 28.34, 19.51, 15.36, 14.02, 20.00, 15.54),
        "pose_only": None,
        "finetune": (10.27, 6.67, 14.02, 17.75, 3.67, 7.18, 4.12, 3.89),
    },
    "novel_subject": {
        "baseline": (5.68, 8.33, 4.68, 4.01, 8.65, 4.07, 3.07, 6.12),
        "composite": (11.63, 23.33, 10.59, 6.15, 10.38, 7.7, 10.46, 13.57),
        "pose_only": None,
        "finetune": (7.45, 8.01, 4.68, 2.03, 2.03, 7.52, 4.48, 4.48),
    },
}
PRINTED_MEANS = {
    "novel_view": {"baseline": 8.58, "composite": 20.82, "pose_only": None, "finetune": 8.45},
    "novel_subject": {"baseline": 5.58, "composite": 11.73, "pose_only": None, "finetune": 5.09},
}
