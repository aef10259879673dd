"""scratchadv: a CNN from scratch in NumPy + autograd, attacked and defended with one gradient.

Modules (data flows one way, top to bottom):

    validate, progress, fileio   argument checks, progress bars, atomic writes
    data        MNIST: find, download (checksummed, atomic), parse IDX
    ops         differentiable primitives: conv2d, maxpool2d, relu, dense, log_softmax
    model       the lecture CNN (and softmax regression, an MLP): predict(params, x)
    losses      loss, input_gradient, gradient_regularized_loss (double backprop)
    optim       RMSprop, SGD with momentum, Adam as pure functions over param dicts
    checkpoint  model files: .npz + JSON metadata, no pickle, atomic
    train       fit(): batches, epochs, validation, checkpoints, exact resume
    attacks     fake images, the lecture's ascent and penalty attack, FGSM, PGD
    defenses    adversarial (min-max) training, gradient regularization
    evaluate    robust accuracy, worst case over attacks, sanity checks, reports
    gradcheck   finite-difference gradient checks (first and second order)
    interchange PyTorch state_dict and Keras weight layouts
    torch_model the same networks in torch.nn (optional; imports torch lazily)
    plots       the lecture's figures
    demo        the whole lecture as a report folder
    cli         the ``scratchadv`` command
"""
__version__ = "0.1.1"
