"""Parts shared by FIRM, MSC and MCL: encoders, heads, batched augmentations, rotations, feature banks, schedules."""
