"""Words and prompt templates the benchmarks build their synthetic data from (shared, so every
benchmark draws from the same vocabulary)."""

WORDS = ("the a model answer question data river stone light quick slow green blue red small large "
         "city garden window table letter number story music water fire cloud morning evening friend "
         "teacher student market road bridge mountain forest ocean island winter summer spring autumn "
         "bread apple orange coffee paper pencil clock train ship plane door house school library "
         "simple careful bright quiet happy strong gentle clear warm cold early late open close "
         "write read explain build carry watch listen follow remember change improve describe "
         "because while after before under over between around through with without and or but").split()
TEMPLATES = ("Describe the {a} near the {b}.", "Explain why a {a} needs a {b}.",
             "Write a short note about the {a} and the {b}.", "List what you know about {a}.",
             "Which is better, the {a} or the {b}?", "Rewrite this sentence more simply: the {a} is {b}.")
