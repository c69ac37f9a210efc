"""What hf_attention does with its models: the `hf-attention` command line, training jobs, data and pictures.

Nothing here is imported by a model file, so a saved model never ships it.
"""
