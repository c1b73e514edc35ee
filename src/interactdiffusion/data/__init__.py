"""HICO-DET data: annotation files → records → training samples, caches, the LightningDataModule.

- ``annotations.load_annotations``: any of the three annotation layouts → ``Annotations`` (records +
  vocabulary), cached; ``formats/`` holds one parser per layout, ``writers`` the inverse.
- ``transforms`` / ``dataset`` / ``collate``: the paper's crop recipe, ``Scene`` + image samples, batches.
- ``phrase_cache`` / ``latent_cache``: phrase embeddings and VAE posteriors computed once.
- ``datamodule.HICODataModule``; ``layouts`` for generation and evaluation; ``synthetic`` for tests.

Nothing is imported here, so ``import interactdiffusion.data.records`` stays light.
"""
