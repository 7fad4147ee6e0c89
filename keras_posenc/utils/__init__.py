from keras import ops


def to_numpy(x):
    """Converts a tensor of any backend to a numpy array."""
    return ops.convert_to_numpy(x)
