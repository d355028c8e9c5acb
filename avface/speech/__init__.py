"""Synthetic speech: espeak-ng synthesis with phoneme timings, sentence generation, viseme co-articulation."""

from avface.speech.espeak import EspeakError, Phoneme, Utterance, Word, phonemes_from_json, synthesize
from avface.speech.sentences import random_sentence, random_text, sentence_slug
from avface.speech.visemes import (
    ARTICULATORS,
    PHONEME_CLASSES,
    articulation_curves,
    phoneme_class,
    phoneme_classes_at,
    viseme_target,
)

__all__ = [
    "ARTICULATORS", "PHONEME_CLASSES", "EspeakError", "Phoneme", "Utterance", "Word", "articulation_curves",
    "phoneme_class", "phoneme_classes_at", "phonemes_from_json", "random_sentence", "random_text",
    "sentence_slug", "synthesize", "viseme_target",
]
