"""Built-in modalities (installed as ``mim.modalities``); each registers one ModalitySpec."""
