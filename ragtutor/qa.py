"""A question-answering system you can trust (chapter 07): answers with citations and a confidence,
"I don't know" when the confidence is too low, and a knowledge base you can edit.

    from ragtutor.qa import QASystem

    qa = QASystem.from_pretrained("checkpoints/rag_token")     # and its calibrated threshold
    reply = qa.ask("What is the capital of France?")
    reply.answer        # 'Paris', or None when the system abstains
    reply.citations     # the retrieved passages, most responsible first: id, title, text, prior, posterior
    reply.confidence    # the signal the abstention rule thresholds
    print(reply)        # Paris  [FRA/capital 1.00, ...]

A :class:`QASystem` wraps a :class:`ragtutor.rag_model.RAGModel`. For each question it generates
an answer, then scores that answer under the model (one more forward pass) to get what a reader of
the answer needs: the document posterior p(d_k|x,y) (which passage the answer came from — the
citations), the prior p(d_k|x) (what the retriever thought before reading) and the answer's own
probability p(y|x). Several *signals* come out of that pass (:data:`SIGNALS`); the abstention rule
answers when the chosen signal reaches a threshold and says "I don't know" otherwise.
``scripts/calibrate_qa.py`` chooses the signal and the threshold on dev questions and writes them
to ``checkpoints/qa_calibration.json``, which :meth:`QASystem.from_pretrained` reads.

The knowledge base is edited through the model: :meth:`QASystem.add_passages` and
:meth:`QASystem.delete_passages` change what it retrieves from, with no weight touched.
"""
import json
import math
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ragtutor.rag import doc_posterior
from ragtutor.retrieval import check_texts

__all__ = ["QASystem", "Reply", "SIGNALS", "CALIBRATION_FILE", "DONT_KNOW", "separation", "threshold_for",
           "show", "ask_widget"]

# What the forward pass over the model's own answer gives, per question (all: higher = surer).
SIGNALS = {
    "answer_probability": "p(y|x), the model's probability of its own answer (marginal over passages)",
    "token_probability": "p(y|x) to the power 1/T: the geometric mean over the answer's T tokens",
    "top_prior": "max_k p(d_k|x): how sure the retriever is of its best passage",
    "top_score": "max_k s_k = q(x)·e(d_k): the best passage's raw retrieval score",
    "top_posterior": "max_k p(d_k|x,y): how much of the answer one passage explains",
}
CALIBRATION_FILE = "qa_calibration.json"
DONT_KNOW = "I don't know"


@dataclass
class Reply:
    """One answered (or declined) question. ``answer`` is None when the system abstains; ``draft``
    is what the model would have answered anyway."""

    question: str
    answer: object
    draft: str
    confidence: float
    threshold: float
    signal: str
    citations: list = field(repr=False)
    signals: dict = field(repr=False)
    tokens: list = field(repr=False)

    @property
    def abstained(self):
        return self.answer is None

    def __str__(self):
        if self.abstained:
            return (f"{DONT_KNOW} ({self.signal} {self.confidence:.4g} is below the threshold "
                    f"{self.threshold:.4g}; the best guess would be {self.draft!r})")
        cited = ", ".join(f"{c['id']} {c['posterior']:.2f}" for c in self.citations[:3])
        return f"{self.answer}  [{cited}]"


class QASystem:
    """Question in; answer, citations and confidence out — or "I don't know".

    ``model``: a :class:`~ragtutor.rag_model.RAGModel`. ``signal``: one of :data:`SIGNALS`.
    ``threshold``: the abstention rule answers when ``signal >= threshold``; ``None`` never
    abstains (an uncalibrated system).
    """

    def __init__(self, model, signal="answer_probability", threshold=None):
        from ragtutor.rag_model import RAGModel

        if not isinstance(model, RAGModel):
            raise TypeError(f"model must be a ragtutor RAGModel, got {type(model).__name__}")
        if signal not in SIGNALS:
            raise ValueError(f"signal must be one of {sorted(SIGNALS)}, got {signal!r}")
        if threshold is not None and (isinstance(threshold, bool) or
                                      not isinstance(threshold, (int, float)) or
                                      not math.isfinite(threshold)):
            raise ValueError(f"threshold must be a finite number or None, got {threshold!r}")
        self.model, self.signal, self.threshold = model.eval(), signal, threshold

    @classmethod
    def from_pretrained(cls, folder, calibration=None, **overrides):
        """The model saved in ``folder`` with the abstention rule calibrated for it: read from
        ``calibration`` (default ``folder``'s parent's ``qa_calibration.json``, keyed by the folder's
        name); ``signal=`` and ``threshold=`` override it. Without a calibration for this model the
        system never abstains, and says so."""
        from ragtutor.rag_model import RAGModel

        folder = Path(folder)
        model = RAGModel.from_pretrained(folder)
        path = Path(calibration) if calibration is not None else folder.parent / CALIBRATION_FILE
        rule = {}
        if path.is_file():
            rule = json.loads(path.read_text()).get("models", {}).get(folder.name, {})
        elif calibration is not None:
            raise FileNotFoundError(f"no calibration file {path}: run `python scripts/calibrate_qa.py`")
        settings = {"signal": rule.get("signal", "answer_probability"),
                    "threshold": rule.get("threshold"), **overrides}
        if settings["threshold"] is None and "threshold" not in overrides:
            warnings.warn(f"no abstention rule calibrated for {folder.name} in {path}: this system "
                          "answers every question. Run `python scripts/calibrate_qa.py`, or pass "
                          "threshold=", UserWarning, stacklevel=2)
        return cls(model, **settings)

    # -- asking -----------------------------------------------------------------------------------
    def ask(self, question):
        """Answer one question: a :class:`Reply`."""
        if not isinstance(question, str):
            raise TypeError(f"question must be a string, got {type(question).__name__}; for many "
                            "questions use ask_many(questions)")
        return self.ask_many([question])[0]

    def ask_many(self, questions, batch_size=32):
        """Answer a list of questions: one :class:`Reply` each."""
        questions = check_texts(questions)
        replies = []
        for start in range(0, len(questions), batch_size):
            replies += self._ask_batch(questions[start:start + batch_size])
        return replies

    def signals(self, questions, batch_size=32):
        """Every signal of :data:`SIGNALS` for each question, and the drafted answers:
        ``({name: array [n]}, drafts)``. What :meth:`calibrate` chooses from."""
        replies = self.ask_many(questions, batch_size)
        return ({name: np.array([r.signals[name] for r in replies]) for name in SIGNALS},
                [r.draft for r in replies])

    @torch.no_grad()
    def _ask_batch(self, questions):
        model = self.model
        drafts = model.generate(questions)
        out = model.forward(questions, [d if d.strip() else "?" for d in drafts])
        pad = model.generator.config.pad_token_id
        args = (out["logprobs"].double(), out["doc_scores"].double(), out["target"], pad)
        prior = torch.softmax(args[1], dim=-1)
        posterior = doc_posterior(*args, variant="sequence")
        token_posterior = doc_posterior(*args, variant="token")
        nll = out["nll"].double()
        lengths = (out["target"] != pad).sum(-1).clamp(min=1)
        replies = []
        for b, question in enumerate(questions):
            signals = {"answer_probability": math.exp(-nll[b].item()),
                       "token_probability": math.exp(-nll[b].item() / lengths[b].item()),
                       "top_prior": prior[b].max().item(),
                       "top_score": out["doc_scores"][b].max().item(),
                       "top_posterior": posterior[b].max().item()}
            if not drafts[b].strip():  # an empty answer is no answer, whatever its probability
                signals = dict.fromkeys(signals, -math.inf)
            target = out["target"][b]
            n_tokens = int((target != pad).sum())
            citations = []
            for k, row in enumerate(out["doc_ids"][b].tolist()):
                passage = model.passages[row]
                citations.append({"id": passage["id"], "title": passage["title"],
                                  "text": passage["text"], "score": out["doc_scores"][b, k].item(),
                                  "prior": prior[b, k].item(), "posterior": posterior[b, k].item(),
                                  "token_posteriors": token_posterior[b, :n_tokens, k].tolist()})
            citations.sort(key=lambda c: -c["posterior"])
            confidence = signals[self.signal]
            answered = self.threshold is None or confidence >= self.threshold
            replies.append(Reply(question=question, answer=drafts[b] if answered else None,
                                 draft=drafts[b], confidence=confidence,
                                 threshold=-math.inf if self.threshold is None else self.threshold,
                                 signal=self.signal, citations=citations, signals=signals,
                                 tokens=model.generator_tokenizer.convert_ids_to_tokens(
                                     target[:n_tokens].tolist())))
        return replies

    # -- editing what it knows --------------------------------------------------------------------
    def add_passages(self, passages):
        """Add passages to the knowledge base (no retraining): see ``RAGModel.add_passages``."""
        return self.model.add_passages(passages)

    def delete_passages(self, ids):
        """Remove passages by id (no retraining); returns them: see ``RAGModel.delete_passages``."""
        return self.model.delete_passages(ids)


def separation(answerable, unanswerable):
    """How well a signal tells answerable from unanswerable questions: the probability that a
    random answerable question scores higher than a random unanswerable one (ties count half) —
    the area under the ROC curve, 0.5 for a useless signal, 1.0 for a perfect one."""
    a, u = np.asarray(answerable, float), np.asarray(unanswerable, float)
    if not len(a) or not len(u):
        raise ValueError("both groups need at least one question")
    greater = (a[:, None] > u[None, :]).mean()
    ties = (a[:, None] == u[None, :]).mean()
    return float(greater + 0.5 * ties)


def threshold_for(unanswerable, max_answered=0.05):
    """The lowest threshold at which at most ``max_answered`` of the ``unanswerable`` questions'
    signals reach it (so the system answers them): the rule keeps as many answerable questions as
    it can under that limit."""
    u = np.sort(np.asarray(unanswerable, float))
    if not len(u):
        raise ValueError("unanswerable is empty")
    if not 0 <= max_answered < 1:
        raise ValueError(f"max_answered must be in [0, 1), got {max_answered!r}")
    allowed = int(math.floor(max_answered * len(u)))      # how many may be answered
    # answered = signal >= t; choose t just above the (len - allowed)-th smallest value
    cut = u[len(u) - allowed - 1]
    return float(np.nextafter(cut, np.inf))


def show(reply, citations=3, plot=True):
    """Print a :class:`Reply` — the answer (or "I don't know"), its confidence and its citations —
    and, with ``plot``, draw the per-token posterior over the cited passages (chapter 05's
    heat-map) with matplotlib. Returns the figure, or None."""
    print(reply if reply.abstained else f"{reply.answer}   ({reply.signal} {reply.confidence:.3f})")
    for c in reply.citations[:citations]:
        print(f"  {c['id']:<16} posterior {c['posterior']:.2f}  prior {c['prior']:.2f}  {c['title']}")
    if not plot or reply.abstained:
        return None
    import matplotlib.pyplot as plt

    shown = reply.citations[:citations]
    matrix = np.array([c["token_posteriors"] for c in shown])
    fig, ax = plt.subplots(figsize=(1.2 + 0.7 * len(reply.tokens), 0.6 + 0.45 * len(shown)))
    ax.imshow(matrix, vmin=0, vmax=1, cmap="Blues", aspect="auto")
    ax.set_xticks(range(len(reply.tokens)), [t.lstrip("▁") or "␣" for t in reply.tokens])
    ax.set_yticks(range(len(shown)), [c["id"] for c in shown])
    ax.set_title(f"{reply.question} -> {reply.answer}", fontsize=9)
    plt.show()
    return fig


def ask_widget(qa, question="What is the capital of France?"):
    """An ask-a-question box (ipywidgets): type a question, press Ask, see the answer, its
    citations and the per-token posterior. It degrades to a static call: the reply to
    ``question`` is printed below the box whether or not a front end is attached (a static page,
    a test run), and without ipywidgets only that reply is shown. Returns the widget, or None."""
    try:
        import ipywidgets as widgets
        from IPython.display import display
    except ImportError:
        print("(ipywidgets is not installed: no question box, only the static answer)")
        show(qa.ask(question), plot=False)
        return None
    box = widgets.Text(value=question, description="Question", layout=widgets.Layout(width="60%"))
    button = widgets.Button(description="Ask")
    output = widgets.Output()

    def on_ask(_):
        output.clear_output()
        with output:
            try:
                show(qa.ask(box.value))
            except (TypeError, ValueError) as error:
                print(f"error: {error}")

    button.on_click(on_ask)
    box.on_submit(on_ask)
    ui = widgets.VBox([widgets.HBox([box, button]), output])
    display(ui)
    show(qa.ask(question), plot=False)   # the static reply, visible without a front end
    return ui
