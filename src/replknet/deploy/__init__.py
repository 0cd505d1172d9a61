"""From a checkpoint to production: predict, convert, re-parameterise, export, benchmark."""

from replknet.deploy.bench import BenchResult, benchmark, format_table, measure_throughput
from replknet.deploy.convert import ConversionResult, convert_checkpoint, reparameterize_checkpoint
from replknet.deploy.export import ExportResult, export_model, prepare_for_export, run_exported
from replknet.deploy.loading import load_model, save_model_folder
from replknet.deploy.predict import ClassScore, Prediction, class_labels, find_images, load_image, predict

__all__ = [
    "BenchResult",
    "ClassScore",
    "ConversionResult",
    "ExportResult",
    "Prediction",
    "benchmark",
    "class_labels",
    "convert_checkpoint",
    "export_model",
    "find_images",
    "format_table",
    "load_image",
    "load_model",
    "measure_throughput",
    "predict",
    "prepare_for_export",
    "reparameterize_checkpoint",
    "run_exported",
    "save_model_folder",
]
