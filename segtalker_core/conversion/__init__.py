"""Converters from other projects' checkpoints into SegTalker bundles.

One module per source layout, each reading with ``torch.load(weights_only=True)`` (no pickled code
runs) and writing through :func:`segtalker_core.models.bundles.save_component`:

* :mod:`.rosinality` -- rosinality/stylegan2-pytorch StyleGAN2 checkpoints (``train.py`` files and
  the converted official ``stylegan2-ffhq-config-f.pt``): a generator and a discriminator bundle.
* :mod:`.e4s` -- E4S's RGI model (``iteration_300000.pt``, its ``Net3``): an encoder and a
  generator bundle.
* :mod:`.any_checkpoint` -- what ``convert`` / ``describe`` call: tries the layouts in turn.

Nothing is imported here, so importing the package stays free of torch.
"""
