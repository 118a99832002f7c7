"""keras-transformer: the Transformer of Vaswani et al. (2017) in Keras 3."""
