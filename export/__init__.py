"""Export a trained keras-transformer run to SavedModel and ONNX."""
