"""Twins of the library's architectures in other frameworks, built from the same layer lists.

Each module here (``torch`` today) walks an architecture's layer list
(:meth:`scratchadv.model.Architecture.layer_shapes`) and maps each layer to the
framework's own: ``Conv`` -> a 'valid' stride-1 convolution, ``Dense`` -> an affine
layer, ``Relu``, ``MaxPool`` (2x2, stride 2), ``Flatten`` (C, H, W order). Parameters
keep our names (``conv1.weight`` ...), so weights copy across unchanged.

A framework is imported only when one of its functions is first called: importing
this package, or any of its modules, imports no framework.
"""
