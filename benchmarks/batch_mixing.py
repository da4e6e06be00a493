"""What the region branch's windowed batches cost against the reference's free shuffle, on a Rohban-sized split.

Run: ``python benchmarks/batch_mixing.py [--fields-per-condition 150] [--nuclei-per-field 60] [--conditions 42]
[--batch-size 32] [--window-fields 32] [--epochs 3]``

The reference shuffles the nuclei of a split freely (``DataLoader(shuffle=True)``), reading a whole field
for every nucleus. image2reg reads each field once per epoch: fields are shuffled, cut into windows of
``window_fields`` fields (the default is half the region cache of 64 fields), and nuclei shuffled within
a window (:func:`image2reg.cnn.datasets.windowed_order`). Batches then draw from the fields of one or two
windows. Printed: distinct fields and conditions per batch under both orders, measured in the same run
(:func:`image2reg.cnn.datasets.batch_mixing`), and their ratio. The defaults follow the Rohban multi-class
stage: 42 conditions, 54–216 fields each in the screen (150 taken), about 60 nuclei kept per field,
batch size 32.
"""

from __future__ import annotations

import argparse

import numpy as np

from image2reg.cnn.datasets import batch_mixing, windowed_order


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--conditions", type=int, default=42)
    parser.add_argument("--fields-per-condition", type=int, default=150)
    parser.add_argument("--nuclei-per-field", type=int, default=60)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--window-fields", type=int, default=32)
    parser.add_argument("--epochs", type=int, default=3)
    args = parser.parse_args()

    rng = np.random.default_rng(0)
    n_fields = args.conditions * args.fields_per_condition
    sizes = rng.poisson(args.nuclei_per_field, n_fields).clip(1)
    field_codes = np.repeat(np.arange(n_fields), sizes)
    labels = np.repeat(np.arange(n_fields) % args.conditions, sizes)  # a field holds one condition
    print(f"{len(field_codes):,} nuclei in {n_fields:,} fields of {args.conditions} conditions; batch size "
          f"{args.batch_size}, windows of {args.window_fields} fields")
    results = {"free shuffle (reference)": [], "windowed (image2reg)": []}
    for epoch in range(args.epochs):
        epoch_rng = np.random.default_rng([1, epoch])
        results["free shuffle (reference)"].append(batch_mixing(epoch_rng.permutation(len(field_codes)), field_codes,
                                                                labels, args.batch_size))
        results["windowed (image2reg)"].append(batch_mixing(windowed_order(field_codes, args.window_fields, epoch_rng),
                                                            field_codes, labels, args.batch_size))
    means = {name: {key: float(np.mean([r[key] for r in runs])) for key in runs[0]} for name, runs in results.items()}
    for name, values in means.items():
        print(f"  {name:26s} fields/batch {values['fields_per_batch']:5.1f}   "
              f"conditions/batch {values['conditions_per_batch']:5.1f}")
    free, windowed = means["free shuffle (reference)"], means["windowed (image2reg)"]
    print(f"  ratio windowed / free: fields {windowed['fields_per_batch'] / free['fields_per_batch']:.2f}, "
          f"conditions {windowed['conditions_per_batch'] / free['conditions_per_batch']:.2f}")


if __name__ == "__main__":
    main()
