"""The reserved token ids and strings, defined once for the whole package."""
PAD_ID, UNK_ID, START_ID, END_ID = 0, 1, 2, 3
PAD_TOKEN, UNK_TOKEN = "[PAD]", "[UNK]"
START_TOKEN, END_TOKEN = "[START]", "[END]"
RESERVED_TOKENS = (PAD_TOKEN, UNK_TOKEN, START_TOKEN, END_TOKEN)
