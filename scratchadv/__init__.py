"""scratchadv: a CNN from scratch in NumPy + autograd, attacked and defended with one gradient.

Modules (data flows one way, top to bottom):

    data        MNIST: find, download (checksummed, atomic), parse IDX
    ops         differentiable primitives: conv2d, maxpool2d, relu, dense, log_softmax
    model       the lecture CNN: init_params(seed), predict(params, x)
    losses      loss, input_gradient, gradient_regularized_loss (double backprop)
    optim       RMSprop, SGD with momentum, Adam as pure functions over param dicts
    train       fit(): batches, epochs, validation, checkpoints
    attacks     fake images, the lecture's ascent, FGSM, PGD, penalty attack
    evaluate    robust accuracy, worst case over attacks, sanity checks
    checkpoint  .npz save/load without pickle; PyTorch / Keras layouts
    gradcheck   finite-difference gradient checks (first and second order)
    plots       the lecture's figures
    cli         the ``scratchadv`` command
"""
__version__ = "0.1.0"
