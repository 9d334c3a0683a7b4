"""Score a few Digits test images with an exported OpenVINO model (the quick-start's last step).

Uses :class:`anomalib_firm.deploy.OpenVINOInferencer` (anomalib's, computing in f32 and resizing
images for a fixed-size export). The images are given at their size (8 px) unless ``--image-size``.

Usage: python tools/score_openvino.py MODEL.xml [--category 0] [--image-size N] [--count 6]
"""

from __future__ import annotations

import argparse

from torch.nn import functional as F

from anomalib_firm.data import Digits
from anomalib_firm.deploy import OpenVINOInferencer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("model", help="exported model.xml")
    parser.add_argument("--category", default="0")
    parser.add_argument("--image-size", type=int, default=None, help="resize the images first (default: as they are)")
    parser.add_argument("--count", type=int, default=6)
    args = parser.parse_args()

    datamodule = Digits(category=args.category)
    datamodule.setup()
    inferencer = OpenVINOInferencer(args.model, device="CPU")  # f32 even on CPUs with bf16
    test = datamodule.test_data
    normal = [i for i in range(len(test)) if int(test[i].gt_label) == 0][: args.count // 2]
    anomalous = [i for i in range(len(test)) if int(test[i].gt_label) == 1][: args.count - len(normal)]
    print(f"Scores of the exported OpenVINO model {args.model} (normalised: above 0.5 is anomalous):")
    print(f"{'image':<40} {'label':>9} {'score':>8} {'predicted':>10}")
    for index in normal + anomalous:
        item = test[index]
        image = item.image[None].float()
        if args.image_size:
            image = F.interpolate(image, size=(args.image_size, args.image_size), mode="bilinear")
        result = inferencer.predict(image)
        label = "anomalous" if int(item.gt_label) else "normal"
        predicted = "anomalous" if bool(result.pred_label.reshape(-1)[0]) else "normal"
        print(f"{item.image_path:<40} {label:>9} {float(result.pred_score.reshape(-1)[0]):8.3f} {predicted:>10}")


if __name__ == "__main__":
    main()
