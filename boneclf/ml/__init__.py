"""Models: the image spec, backbones, the tf.data pipeline, training, evaluation, prediction, Grad-CAM.

`ml` imports `data` and `store`; TensorFlow loads only when a function that needs it runs.
"""
