"""Self-checks for the exercises that end every chapter ("Check yourself").

An exercise cell ends with a call to the exercise's check, named after its chapter::

    ragtutor.exercises.ch01_precision_at_k(precision_at_k)

A right answer prints one line and returns ``None``::

    ✓ Exercise 1.2 passed: precision_at_k is right on 4 rankings.

A wrong one raises :class:`ExerciseFailed`, which says what is wrong, what was expected, what the
learner's code gave, and a hint::

    ExerciseFailed: Exercise 1.2: precision_at_k([3, 1, 2], {1}, 2) is wrong
      expected: 0.5
      got:      1.0
      hint:     precision@k divides by k, not by the number of relevant documents.

Writing a check (chapter authors): decorate it with ``@exercise("N.M")``, name it ``chNN_...``
after its chapter, build it from :func:`check`, :func:`check_equal`, :func:`check_close` and
:func:`check_function`, and return a short success message (or ``None``)::

    @exercise("1.2")
    def ch01_precision_at_k(precision_at_k):
        check_function(precision_at_k, [(([3, 1, 2], {1}, 2), 0.5), (([3, 1, 2], {4}, 3), 0.0)],
                       compare=check_close,
                       hint="precision@k divides by k, not by the number of relevant documents.")
        return "precision_at_k is right on 2 rankings."

The checks live in one module per chapter (``ch00`` ... ``ch10``), built on ``checks``;
:data:`EXERCISES` maps each exercise number to its check. notebooks/README.md describes the whole
convention, solutions included.
"""
from ragtutor.exercises.checks import (EXERCISES, ExerciseFailed, check, check_close, check_equal,
                                       check_function, exercise)
from ragtutor.exercises.ch00 import ch00_majority_answer, ch00_seen_entity_share
from ragtutor.exercises.ch01 import (ch01_bm25_term_weight, ch01_expand_query, ch01_ndcg_at_k,
                                     ch01_precision_at_k)
from ragtutor.exercises.ch02 import ch02_mean_pool, ch02_rrf_scores, ch02_symmetric_loss
from ragtutor.exercises.ch03 import ch03_beam_step, ch03_sequence_log_prob, ch03_shift_right
from ragtutor.exercises.ch04 import (ch04_fast_decode, ch04_rag_sequence_log_likelihood,
                                     ch04_rag_token_score_gradient)
from ragtutor.exercises.ch05 import ch05_retriever_gradient, ch05_stale_top_k
from ragtutor.exercises.ch06 import ch06_rag_labels, ch06_rag_token_loss
from ragtutor.exercises.ch07 import ch07_choose_threshold, ch07_edited_passage, ch07_faithfulness
from ragtutor.exercises.ch08 import ch08_fact_scores, ch08_hit_at_k, ch08_mixture_step
from ragtutor.exercises.ch09 import ch09_length_byte, ch09_merge_shards, ch09_weighted_average
from ragtutor.exercises.ch10 import ch10_mcnemar, ch10_mixed_ranking, ch10_word_windows

__all__ = ["EXERCISES", "ExerciseFailed", "exercise", "check", "check_equal", "check_close",
           "check_function",
           "ch00_majority_answer", "ch00_seen_entity_share",
           "ch01_bm25_term_weight", "ch01_precision_at_k", "ch01_ndcg_at_k", "ch01_expand_query",
           "ch02_symmetric_loss", "ch02_rrf_scores", "ch02_mean_pool",
           "ch03_shift_right", "ch03_beam_step", "ch03_sequence_log_prob",
           "ch04_rag_sequence_log_likelihood", "ch04_rag_token_score_gradient", "ch04_fast_decode",
           "ch05_retriever_gradient", "ch05_stale_top_k",
           "ch06_rag_labels", "ch06_rag_token_loss",
           "ch07_choose_threshold", "ch07_edited_passage", "ch07_faithfulness",
           "ch08_fact_scores", "ch08_mixture_step", "ch08_hit_at_k",
           "ch09_merge_shards", "ch09_length_byte", "ch09_weighted_average",
           "ch10_word_windows", "ch10_mixed_ranking", "ch10_mcnemar"]
