"""scratchadv: a CNN from scratch in NumPy + autograd, attacked and defended with one gradient.

Modules (data flows one way, top to bottom):

    validate, progress, fileio   argument checks, progress bars, atomic writes
    memory, threads              the allocator keeps freed memory; the primitives' threads
    data        MNIST: find, download (checksummed, atomic), parse IDX
    ops         differentiable primitives: conv2d, maxpool2d, relu, dense, log_softmax
    model       each architecture declared once as a layer list -> specs, init, predict
    losses      loss, input_gradient, gradient_regularized_loss (double backprop)
    optim       RMSprop, SGD with momentum, Adam as pure functions over param dicts
    checkpoint  model files: .npz + JSON metadata, no pickle, atomic
    train       fit(): batches, epochs, validation, checkpoints, exact resume; plan_training
    cache       trained models kept by their training config
    attacks/    geometry (norms, step size), pgd (FGSM, PGD, minimal perturbation),
                lecture (fake images, ascent, penalty attack), result, gradients, dataset
    defenses    adversarial (min-max) training, gradient regularization
    evaluate/   protocol (worst case over attacks), checks (sanity, one function each),
                report (Markdown, files), model_file (evaluate_file)
    gradcheck   finite-difference gradient checks (first and second order)
    interchange PyTorch state_dict and Keras weight layouts
    frameworks/ the same networks in torch.nn, JAX and TensorFlow (optional; each
                imported on demand); torch_model re-exports the torch twin
    verify      every gradient against the installed frameworks; conventions probes
    plots       every figure
    demo/       the whole lecture as a report folder: settings, sections, report, run
    cli         the ``scratchadv`` command
"""
__version__ = "0.3.0"

# Short-lived arrays are reused from malloc's heap instead of faulted in afresh on every
# step (scratchadv.memory; SCRATCHADV_MALLOC=system opts out). Results do not change.
from .memory import keep_freed_memory as _keep_freed_memory
_keep_freed_memory()
