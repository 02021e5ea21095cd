"""Checksums of saved model folders: a changed, truncated or swapped file is caught on load.

A model folder (a chapter's checkpoint, or anything ``save_pretrained`` wrote) holds a
``MANIFEST.sha256`` beside its files, one ``<sha256>  <relative path>`` line per file, in the
format of ``sha256sum`` and of the knowledge base's manifest. Loading verifies every file listed
and that no file the model needs is unlisted, and names the file at fault and the command that
writes the folder again. Without this, one flipped byte in a weight file gives wrong answers, not
an error. ``training.json`` is a record of how the model was made, not part of the model, so it
is left out (the training scripts write it after the model).
"""
import hashlib
from pathlib import Path

__all__ = ["MANIFEST", "ChecksumError", "write_manifest", "verify_manifest", "REMEDIES",
           "load_weights"]

MANIFEST = "MANIFEST.sha256"
_NOT_LISTED = {MANIFEST, "training.json"}
# The command that writes each of the course's checkpoints again (from the repository root).
REMEDIES = {"retriever": "python scripts/train_retriever.py",
            "reader": "python scripts/train_generation.py",
            "closed_book": "python scripts/train_generation.py",
            "rag_token": "python scripts/train_rag.py --variant token",
            "rag_sequence": "python scripts/train_rag.py --variant sequence",
            "rag_token_reader_frozen": "python scripts/train_rag.py --variant token --freeze-generator",
            "rag_sequence_reader_frozen":
                "python scripts/train_rag.py --variant sequence --freeze-generator",
            "profile_fid": "python scripts/train_profiles.py --only fid",
            "profile_rag_token": "python scripts/train_profiles.py --only rag_token",
            "reranker": "python scripts/train_reranker.py",
            "two_fact_fid": "python scripts/train_two_fact.py --only fid",
            "two_fact_rag_sequence": "python scripts/train_two_fact.py --only rag_sequence",
            "two_fact_rag_token": "python scripts/train_two_fact.py --only rag_token",
            "prompt_decoder": "python scripts/train_decoder_reader.py --only decoder",
            "prompt_encoder_decoder": "python scripts/train_decoder_reader.py --only encoder_decoder",
            "factual_reader": "python scripts/train_factual_reader.py"}


class ChecksumError(RuntimeError):
    """A model folder's file is missing, changed or unlisted; the message says how to restore it."""


def _files(folder):
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*")
                  if p.is_file() and p.name not in _NOT_LISTED)


def _sha256(path):
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_manifest(folder):
    """Write ``folder/MANIFEST.sha256`` for every file below ``folder`` (nested manifests and
    ``training.json`` excepted); returns the paths listed."""
    folder = Path(folder)
    names = _files(folder)
    (folder / MANIFEST).write_text("".join(f"{_sha256(folder / n)}  {n}\n" for n in names))
    return names


def _remedy(folder):
    command = REMEDIES.get(Path(folder).name)
    how = f"write it again with `{command}`" if command else "save the model again"
    return f"{how}, or restore the folder from git (`git checkout -- {folder}`)"


def verify_manifest(folder, required=False):
    """Check every file of ``folder`` against its manifest; return the verified paths.

    Without a manifest: an error when ``required`` (the course's own checkpoints always have one),
    else nothing is checked and None is returned (a folder saved before manifests existed).
    """
    folder = Path(folder)
    path = folder / MANIFEST
    if not path.is_file():
        if required:
            raise ChecksumError(f"{path} is missing, so {folder} cannot be verified: "
                                f"{_remedy(folder)}")
        return None
    listed = {}
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        digest, sep, name = line.partition("  ")
        if not sep or len(digest) != 64 or not name:
            raise ChecksumError(f"{path}: line {number} is not '<sha256>  <path>': {_remedy(folder)}")
        listed[name] = digest
    for name, digest in listed.items():
        if not (folder / name).is_file():
            raise ChecksumError(f"{folder / name} is missing: {_remedy(folder)}")
        if _sha256(folder / name) != digest:
            raise ChecksumError(f"{folder / name} does not match its checksum in {path} (the file "
                                f"was changed, truncated or replaced): {_remedy(folder)}")
    unlisted = sorted(set(_files(folder)) - listed.keys())
    if unlisted:
        raise ChecksumError(f"{folder / unlisted[0]} is not in {path}: a file was added or swapped "
                            f"in; {_remedy(folder)}")
    return sorted(listed)


def load_weights(model_class, folder, root=None):
    """``model_class.from_pretrained(folder)``, offline, refusing a model whose weights do not fit
    its configuration — Transformers would fill a missing weight with random numbers (a config.json
    that asks for more layers than were saved) or drop an unexpected one, and only print a table —
    or hold a NaN or infinite value (every answer would be empty).
    ``root``, the checkpoint folder ``folder`` belongs to, names the remedy (default ``folder``)."""
    try:
        model, info = model_class.from_pretrained(folder, local_files_only=True,
                                                  output_loading_info=True)
    except RuntimeError as error:  # weights of another shape than config.json asks for
        info = {"missing_keys": [], "unexpected_keys": [],
                "mismatched_keys": [str(error).splitlines()[0][:200]]}
    problems = {kind: sorted(info[kind]) for kind in ("missing_keys", "unexpected_keys",
                                                      "mismatched_keys") if info[kind]}
    if not problems:
        bad = [name for name, tensor in model.state_dict().items()
               if tensor.is_floating_point() and not bool(tensor.isfinite().all())]
        if bad:
            problems["non-finite weights (NaN or infinity)"] = bad
    if problems:
        listed = "; ".join(f"{kind.replace('_', ' ')}: {', '.join(map(str, names[:3]))}"
                           + (f" and {len(names) - 3} more" if len(names) > 3 else "")
                           for kind, names in problems.items())
        remedy = _remedy(Path(root or folder))
        raise ChecksumError(f"{folder}: the weights are unusable or do not fit config.json ({listed}): "
                            f"the model would compute with random, missing or NaN weights. "
                            f"{remedy[0].upper()}{remedy[1:]}.")
    return model
