"""Chapter 06's package side: the course's models exported to Hugging Face RAG and loaded back
with the standard calls, offline — same documents, same losses, same answers as ragtutor's own
code (chapter 04's functions)."""
import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch
from transformers import (BartConfig, BartForConditionalGeneration, DPRConfig, DPRContextEncoder,
                          DPRQuestionEncoder, GenerationConfig, RagRetriever,
                          RagSequenceForGeneration, RagTokenForGeneration, RagTokenizer)
from transformers.utils import logging as transformers_logging

from ragtutor.data import load_passages, load_questions
from ragtutor.dense import BiEncoder
from ragtutor.generation import CHECKPOINT_DIR, combined_input, load_checkpoint, train_tokenizer
from ragtutor.hf import CONTEXT_ENCODER_DIR, as_biencoder, export_rag, passages_dataset, rag_labels
from ragtutor.rag import nll_inputs_from_hf, rag_sequence_nll, rag_token_nll
from ragtutor.rag_model import RAGModel
from ragtutor.tools import netguard
from ragtutor.tools.testing import SITE_DIR

HF_TOLERANCE = 1e-5  # the bar for "the same loss"; never loosened
K = 5
FRANCE = "What is the capital of France?"


def load_exported(exported, variant="token"):
    """The issue's snippet, pointed at an exported folder."""
    tokenizer = RagTokenizer.from_pretrained(exported.folder)
    retriever = RagRetriever.from_pretrained(exported.folder, index_name="custom",
                                             passages_path=exported.passages_path,
                                             index_path=exported.index_path)
    cls = RagTokenForGeneration if variant == "token" else RagSequenceForGeneration
    return tokenizer, cls.from_pretrained(exported.folder, retriever=retriever)


@pytest.fixture(scope="module")
def course(tmp_path_factory):
    """The committed chapter 02 retriever and chapter 03 reader over the knowledge base, exported
    once, and both Hugging Face RAG classes loaded from the export."""
    torch.set_num_threads(1)
    transformers_logging.disable_progress_bar()
    biencoder = BiEncoder.from_pretrained(CHECKPOINT_DIR / "retriever")
    generator, generator_tokenizer, _ = load_checkpoint("reader")
    passages = load_passages()
    ours = RAGModel(biencoder, generator, generator_tokenizer, passages, n_docs=K,
                    variant="token").eval()
    exported = export_rag(tmp_path_factory.mktemp("export") / "rag", biencoder, generator,
                          generator_tokenizer, passages, n_docs=K,
                          embeddings=ours.passage_vectors.numpy())
    tokenizer, token_model = load_exported(exported, "token")
    _, sequence_model = load_exported(exported, "sequence")
    test = load_questions("test")
    return {"ours": ours, "exported": exported, "tokenizer": tokenizer, "token": token_model,
            "sequence": sequence_model, "test": test, "biencoder": biencoder,
            "generator": generator, "generator_tokenizer": generator_tokenizer}


def test_the_round_trip_ran_with_the_network_blocked(course):
    assert netguard.is_installed()
    assert os.environ.get("HF_HUB_OFFLINE") == "1"


def test_the_export_holds_every_file_the_standard_calls_read(course):
    folder = course["exported"].folder
    names = set(os.listdir(folder))
    assert {"config.json", "model.safetensors", "question_encoder_tokenizer",
            "generator_tokenizer", "passages", "passages.faiss", CONTEXT_ENCODER_DIR} <= names
    generation = json.loads(open(os.path.join(folder, "generation_config.json")).read())
    assert generation["_from_model_config"]  # the Transformers 5 quirk in ragtutor.hf
    assert (generation["max_length"], generation["decoder_start_token_id"]) == (17, 1)
    config = json.loads(open(os.path.join(folder, "config.json")).read())
    assert (config["n_docs"], config["index_name"], config["retrieval_vector_size"]) == \
        (K, "custom", 64)
    assert config["max_combined_length"] == 128  # the reader's max_position_embeddings
    assert (config["decoder_start_token_id"], config["eos_token_id"], config["pad_token_id"]) == \
        (1, 2, 0)


def test_exported_weights_are_the_course_models(course):
    model = course["token"]
    for exported, original in ((model.question_encoder, course["biencoder"].question_encoder),
                               (model.generator, course["generator"])):
        ours = original.state_dict()
        for name, tensor in exported.state_dict().items():
            assert torch.equal(tensor, ours[name]), name
    generator = model.generator
    assert generator.lm_head.weight.data_ptr() == generator.model.shared.weight.data_ptr()
    context_encoder = DPRContextEncoder.from_pretrained(
        os.path.join(course["exported"].folder, CONTEXT_ENCODER_DIR))
    for name, tensor in context_encoder.state_dict().items():
        assert torch.equal(tensor, course["biencoder"].context_encoder.state_dict()[name]), name


def test_transformers_5_rag_tokenizer_has_no_encode(course):
    """The one-line difference from the Transformers 4 snippet the chapter starts from. The
    question encoder's tokenizer lower-cases, so the question comes back lower-cased — the text
    RagRetriever hands the generator, and the one RAGModel's generator reads too."""
    assert not hasattr(course["tokenizer"], "encode")
    ids = course["tokenizer"](FRANCE, return_tensors="pt").input_ids
    decoded = course["tokenizer"].question_encoder.decode(ids[0], skip_special_tokens=True)
    assert decoded == FRANCE.lower() == course["ours"].questions_as_read([FRANCE])[0]


def test_same_documents_scores_and_generator_inputs(course):
    questions = [q["question"] for q in course["test"][:24]] + [FRANCE]
    batch = course["tokenizer"](questions, padding=True, return_tensors="pt")
    with torch.no_grad():
        out = course["token"](input_ids=batch.input_ids, attention_mask=batch.attention_mask,
                              output_retrieved=True, n_docs=K)
    with torch.no_grad():
        doc_scores, doc_ids = course["ours"].retrieve_rows(questions)
    assert (out.retrieved_doc_ids == doc_ids).all()
    torch.testing.assert_close(out.doc_scores, doc_scores, rtol=0, atol=1e-5)
    input_ids, _ = course["ours"].generator_inputs(questions, doc_ids)
    width = input_ids.shape[1]
    assert out.context_input_ids.shape == (len(questions) * K, 128)
    assert (out.context_input_ids[:, width:] == 0).all()  # padding to max_combined_length
    assert torch.equal(out.context_input_ids[:, :width], input_ids)
    top = course["ours"].passages[int(doc_ids[-1][0])]
    assert top["title"] == "France"
    assert course["generator_tokenizer"].decode(out.context_input_ids[-K],
                                                skip_special_tokens=True) == \
        combined_input(top["title"], top["text"], FRANCE.lower())


@pytest.mark.parametrize("variant", ["token", "sequence"])
def test_exported_loss_equals_ragtutors(course, variant):
    test = course["test"][:32]
    questions, answers = [q["question"] for q in test], [q["answers"][0] for q in test]
    batch = course["tokenizer"](questions, padding=True, return_tensors="pt")
    labels = rag_labels(course["generator_tokenizer"], answers)
    with torch.no_grad():
        out = course[variant](input_ids=batch.input_ids, attention_mask=batch.attention_mask,
                              labels=labels)
        ours = course["ours"].nll(questions, answers, variant)
    assert out.loss.shape == (len(test),)
    torch.testing.assert_close(out.loss, ours, rtol=0, atol=HF_TOLERANCE)
    # and from Hugging Face's own per-document logits, by chapter 04's formula
    nll = rag_token_nll if variant == "token" else rag_sequence_nll
    logprobs, target = nll_inputs_from_hf(out.logits, labels, K, 0)
    torch.testing.assert_close(nll(logprobs, out.doc_scores, target, 0), out.loss, rtol=0,
                               atol=HF_TOLERANCE)


def test_generate_gives_ragtutors_greedy_answers(course):
    test = course["test"][:60]
    questions = [FRANCE] + [q["question"] for q in test]
    batch = course["tokenizer"](questions, padding=True, return_tensors="pt")
    generated = course["token"].generate(batch.input_ids, attention_mask=batch.attention_mask,
                                         num_beams=1)
    hf = course["tokenizer"].batch_decode(generated, skip_special_tokens=True)
    ours = course["ours"].generate(questions, num_beams=1, max_new_tokens=16)
    assert hf == ours
    assert hf[0] == "Paris"
    assert generated.shape[1] <= 1 + 16  # the start token and at most max_new_tokens


def test_the_snippet_runs_in_a_fresh_process_without_offline_variables(course):
    """A learner's laptop has no HF_HUB_OFFLINE: loading the export must still need no network.
    The guard (RAGTUTOR_BLOCK_NETWORK and sitecustomize) turns any attempt into an error."""
    script = textwrap.dedent(f"""
        import torch
        torch.set_num_threads(1)
        from transformers import RagRetriever, RagTokenForGeneration, RagTokenizer
        from ragtutor.tools import netguard
        assert netguard.is_installed()
        folder = {course["exported"].folder!r}
        tokenizer = RagTokenizer.from_pretrained(folder)
        retriever = RagRetriever.from_pretrained(folder, index_name="custom",
            passages_path={course["exported"].passages_path!r},
            index_path={course["exported"].index_path!r})
        model = RagTokenForGeneration.from_pretrained(folder, retriever=retriever)
        input_ids = tokenizer({FRANCE!r}, return_tensors="pt").input_ids
        print(tokenizer.decode(model.generate(input_ids)[0], skip_special_tokens=True))
    """)
    env = {k: v for k, v in os.environ.items()
           if k not in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE")}
    env.update(RAGTUTOR_BLOCK_NETWORK="1", OMP_NUM_THREADS="1",
               PYTHONPATH=os.pathsep.join([str(SITE_DIR), env.get("PYTHONPATH", "")]))
    result = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip().splitlines()[-1] == "Paris"


def test_transformers_5_from_pretrained_with_retriever_fails_on_a_generation_config(course,
                                                                                     tmp_path):
    """Why the export's generation config is marked as derived from the model config. If this
    test fails, Transformers fixed the quirk, and the mark can go."""
    exported = export_rag(tmp_path / "rag", course["biencoder"], course["generator"],
                          course["generator_tokenizer"], load_passages()[:50], n_docs=2)
    GenerationConfig(decoder_start_token_id=1, eos_token_id=2, num_beams=4).save_pretrained(
        exported.folder)
    retriever = RagRetriever.from_pretrained(exported.folder)  # paths from config.json
    with pytest.raises(TypeError, match="RagRetriever is not JSON serializable"):
        RagTokenForGeneration.from_pretrained(exported.folder, retriever=retriever)


# --- any (question encoder, context encoder, tokenizer) triple ---------------------------------

PASSAGES = [{"id": "FRA", "title": "France", "text": "Paris is the capital of France."},
            {"id": "JPN", "title": "Japan", "text": "Tokyo is the capital of Japan."},
            {"id": "PER", "title": "Peru", "text": "Lima is the capital of Peru."},
            {"id": "KEN", "title": "Kenya", "text": "Nairobi is the capital of Kenya."}]
QUESTIONS = ["What is the capital of France?", "Which city is the capital of Japan?"]


@pytest.fixture(scope="module")
def tiny():
    """Random tiny DPR encoders and BART (large init, so the documents matter)."""
    torch.manual_seed(0)
    tokenizer = train_tokenizer([f"{p['title']} {p['text']}" for p in PASSAGES] + QUESTIONS)
    dpr = DPRConfig(vocab_size=len(tokenizer), hidden_size=16, num_hidden_layers=1,
                    num_attention_heads=2, intermediate_size=32, initializer_range=0.5,
                    max_position_embeddings=64, pad_token_id=0)
    generator = BartForConditionalGeneration(BartConfig(
        vocab_size=len(tokenizer), d_model=16, encoder_layers=1, decoder_layers=1,
        encoder_attention_heads=2, decoder_attention_heads=2, encoder_ffn_dim=32,
        decoder_ffn_dim=32, max_position_embeddings=64, bos_token_id=1, eos_token_id=2,
        pad_token_id=0, decoder_start_token_id=1, forced_eos_token_id=None, init_std=0.5,
        tie_word_embeddings=False)).eval()
    return {"triple": (DPRQuestionEncoder(dpr).eval(), DPRContextEncoder(dpr).eval(), tokenizer),
            "generator": generator, "tokenizer": tokenizer}


@pytest.mark.parametrize("variant", ["token", "sequence"])
def test_a_triple_with_untied_generator_embeddings_round_trips(tiny, tmp_path, variant):
    exported = export_rag(tmp_path / "rag", tiny["triple"], tiny["generator"], tiny["tokenizer"],
                          PASSAGES, n_docs=3, max_combined_length=40)
    tokenizer, model = load_exported(exported, variant)
    assert not torch.equal(model.generator.lm_head.weight, model.generator.model.shared.weight)
    ours = RAGModel(as_biencoder(tiny["triple"]), tiny["generator"], tiny["tokenizer"], PASSAGES,
                    n_docs=3, variant=variant).eval()
    batch = tokenizer(QUESTIONS, padding=True, return_tensors="pt")
    answers = ["Paris", "the capital is Tokyo"]
    with torch.no_grad():
        out = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask,
                    labels=rag_labels(tiny["tokenizer"], answers))
        expected = ours.nll(QUESTIONS, answers, variant)
    torch.testing.assert_close(out.loss, expected, rtol=0, atol=HF_TOLERANCE)
    if variant == "token":
        # Random weights never say </s> here: the answer runs to max_length = 16 + 1 tokens, the
        # limit the export wrote; generate ignores max_new_tokens (a Transformers 5 quirk).
        for options in ({}, {"max_new_tokens": 3}):
            generated = model.generate(batch.input_ids, attention_mask=batch.attention_mask,
                                       num_beams=1, **options)
            assert generated.shape == (2, 17)
            assert (generated[:, 1:] != tiny["tokenizer"].eos_token_id).all()
        assert model.generate(batch.input_ids, attention_mask=batch.attention_mask,
                              max_length=4).shape == (2, 4)


def test_passages_dataset_has_the_columns_and_index_rag_retriever_checks(tiny):
    dataset = passages_dataset(PASSAGES, tiny["triple"])
    assert dataset.column_names == ["title", "text", "embeddings"]
    assert dataset.list_indexes() == ["embeddings"]
    embeddings = as_biencoder(tiny["triple"]).encode_passages(PASSAGES)
    scores, found = dataset.get_nearest_examples("embeddings", embeddings[2], k=1)
    assert found["title"] == ["Peru"]


# --- bad input ---------------------------------------------------------------------------------

def test_bad_input_gets_a_clear_error(tiny, tmp_path):
    triple, generator, tokenizer = tiny["triple"], tiny["generator"], tiny["tokenizer"]

    def export(folder=None, **changes):
        args = {"retriever": triple, "generator": generator, "generator_tokenizer": tokenizer,
                "passages": PASSAGES, "n_docs": 2, **changes}
        return export_rag(folder or tmp_path / f"new{len(os.listdir(tmp_path))}", **args)

    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "old.txt").write_text("x")
    with pytest.raises(FileExistsError, match="not an empty folder"):
        export(tmp_path / "full")
    with pytest.raises(TypeError, match="BiEncoder or a triple"):
        export(retriever=triple[0])
    with pytest.raises(ValueError, match="pooling='first'"):
        export(retriever=BiEncoder(*triple, pooling="mean"))
    with pytest.raises(TypeError, match="question_encoder must be a transformers.DPRQuestion"):
        export(retriever=(triple[1], triple[1], tokenizer))
    with pytest.raises(TypeError, match="encoder-decoder"):
        export(generator=triple[0])
    with pytest.raises(ValueError, match="at most 64"):
        export(max_combined_length=65)
    with pytest.raises(ValueError, match="n_docs=9 is more than the 4 passages"):
        export(n_docs=9)
    with pytest.raises(ValueError, match="n_docs must be a positive integer"):
        export(n_docs=0)
    with pytest.raises(ValueError, match=r"passages\[1\] must be a dict"):
        export(passages=[PASSAGES[0], "Tokyo is the capital of Japan."])
    with pytest.raises(TypeError, match="passages must be a list"):
        export(passages=PASSAGES[0])
    with pytest.raises(ValueError, match="embeddings must have shape"):
        export(embeddings=torch.zeros(3, 16).numpy())
    other = BartForConditionalGeneration(BartConfig(
        vocab_size=len(tokenizer), d_model=16, encoder_layers=1, decoder_layers=1,
        encoder_attention_heads=2, decoder_attention_heads=2, encoder_ffn_dim=32,
        decoder_ffn_dim=32, max_position_embeddings=64, pad_token_id=1, bos_token_id=0,
        eos_token_id=2, decoder_start_token_id=2))
    with pytest.raises(ValueError, match="tokenizer and the generator must agree"):
        export(generator=other)
    assert not any(name.startswith("new") for name in os.listdir(tmp_path))


def test_the_course_model_refuses_bad_input(tiny):
    ours = RAGModel(as_biencoder(tiny["triple"]), tiny["generator"], tiny["tokenizer"], PASSAGES,
                    n_docs=2)
    with pytest.raises(TypeError, match="wrap a single one in a list"):
        ours.retrieve(QUESTIONS[0])
    with pytest.raises(ValueError, match="2 questions but 1 answers"):
        ours.nll(QUESTIONS, ["Paris"])
    with pytest.raises(ValueError, match="variant must be"):
        ours.nll(QUESTIONS, ["Paris", "Tokyo"], variant="thorough")
    with pytest.raises(ValueError, match=r"answers\[0\] must be a non-empty string"):
        rag_labels(tiny["tokenizer"], [""])
    with pytest.raises(ValueError, match=r"passage_vectors must have shape \[4, 16\]"):
        RAGModel(as_biencoder(tiny["triple"]), tiny["generator"], tiny["tokenizer"], PASSAGES,
                 n_docs=2, passage_vectors=torch.zeros(3, 16).numpy())


def test_as_biencoder_keeps_a_biencoder(tiny):
    biencoder = BiEncoder(*tiny["triple"])
    assert as_biencoder(biencoder) is biencoder
    assert isinstance(as_biencoder(list(tiny["triple"])), BiEncoder)


def test_an_export_refuses_a_length_that_would_cut_every_passage(tiny, tmp_path):
    # max_combined_length=8 used to export a model that silently truncated every input.
    with pytest.raises(ValueError, match="cannot hold passage"):
        export_rag(tmp_path / "rag", tiny["triple"], tiny["generator"], tiny["tokenizer"],
                   PASSAGES, n_docs=2, max_combined_length=8)
    assert not (tmp_path / "rag").exists()
