"""`--mode predict`: classify an image or a folder of images with a trained model.

Images go through the evaluation preprocessing (center crop, resize) and a compiled model;
the output file (JSON or CSV, by extension) lists each image's top-k class ids, names and
probabilities. Class names are ImageNet's (shipped with tensorflow-datasets) for 1000
classes, or the `labels.txt` written by tools.make_tfrecords next to the data, if given.
"""
from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import tensorflow as tf

from effnet.core.errors import DataError
from effnet.data.imagenet_example import imagenet_class_names
from effnet.data.preprocess import preprocess_eval
from effnet.data.readers import IMAGE_SUFFIXES

AUTOTUNE = tf.data.AUTOTUNE


def list_images(path: str) -> list[str]:
    """An image file, a flat folder of images, or a folder of such folders (Keras' and NVIDIA's
    `infer_data/images/` layout), in name order."""
    target = Path(path)
    if target.is_file():
        return [str(target)]
    if not target.is_dir():
        raise DataError(f"--predict_path {path}: no such file or folder")

    def images_in(folder: Path) -> list[str]:
        return sorted(str(p) for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)

    files = images_in(target) or [f for sub in sorted(target.iterdir()) if sub.is_dir() for f in images_in(sub)]
    if not files:
        raise DataError(f"--predict_path {path}: no images ({', '.join(sorted(IMAGE_SUFFIXES))}) in it "
                        "or in its folders")
    return files


def class_names(num_classes: int, data_dir: str | None) -> list[str]:
    labels = Path(data_dir) / "labels.txt" if data_dir else None
    if labels is not None and labels.is_file():
        names = labels.read_text().splitlines()
        if len(names) >= num_classes:
            return names[:num_classes]
    if num_classes == 1000:
        return imagenet_class_names()
    return [str(i) for i in range(num_classes)]


def predict(infer, paths: list[str], image_size: int, batch_size: int, top_k: int,
            names: list[str], crop_padding: int = 32) -> list[dict]:
    """Top-k predictions per image; an unreadable image gets an `error` entry instead."""
    def load(path):
        return preprocess_eval(tf.io.read_file(path), image_size, crop_padding)

    rows: list[dict] = []
    for start in range(0, len(paths), batch_size):
        chunk = paths[start:start + batch_size]
        images, good = [], []
        for path in chunk:
            try:
                images.append(load(path))
                good.append(path)
            except tf.errors.OpError as err:
                rows.append({"file": path, "error": str(err).splitlines()[0]})
        if not images:
            continue
        probs = tf.nn.softmax(tf.cast(infer(tf.stack(images)), tf.float32), -1)
        values, indices = tf.math.top_k(probs, k=min(top_k, probs.shape[-1]))
        for path, vals, ids in zip(good, values.numpy(), indices.numpy()):
            rows.append({"file": path, "top_k": [
                {"class_id": int(i), "class_name": names[int(i)], "probability": float(v)} for i, v in zip(ids, vals)]})
    order = {p: i for i, p in enumerate(paths)}
    return sorted(rows, key=lambda r: order[r["file"]])


def write_predictions(rows: list[dict], output: str) -> None:
    os.makedirs(os.path.dirname(os.path.abspath(output)), exist_ok=True)
    tmp = output + ".tmp"
    if output.endswith(".csv"):
        with open(tmp, "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["file", "rank", "class_id", "class_name", "probability", "error"])
            for row in rows:
                if "error" in row:
                    writer.writerow([row["file"], "", "", "", "", row["error"]])
                for rank, item in enumerate(row.get("top_k", []), 1):
                    writer.writerow([row["file"], rank, item["class_id"], item["class_name"],
                                     f"{item['probability']:.6f}", ""])
    else:
        with open(tmp, "w") as f:
            json.dump(rows, f, indent=1)
    os.replace(tmp, output)


def run_predict(cfg, model_cfg, logger) -> list[dict]:
    """`--mode predict`: restore, classify, write the output file, log a summary."""
    from effnet.train.evaluate import make_inference_fn
    from effnet.inference import restore_for_inference

    if not cfg.predict_path:
        raise DataError("--mode predict needs --predict_path (an image, or a folder of images or of image folders)")
    paths = list_images(cfg.predict_path)
    model, ema, checkpoint = restore_for_inference(cfg, model_cfg)
    if ema is not None:
        ema.copy_to_model()
    infer = make_inference_fn(model, cfg.use_xla)
    rows = predict(infer, paths, cfg.eval_img_size, cfg.eval_batch_size, cfg.top_k,
                   class_names(model_cfg.num_classes, cfg.data_dir), cfg.crop_padding)
    output = cfg.predict_output or os.path.join(cfg.model_dir, "predictions.json")
    write_predictions(rows, output)
    logger.log((), {"comment": "predictions written", "output": output, "images": len(paths),
                    "errors": sum("error" in r for r in rows), "checkpoint": checkpoint or "random weights",
                    "weights": "EMA" if ema is not None else "original"})
    return rows
