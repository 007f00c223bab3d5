"""RAIE retrieval: text encoders behind one interface and the FAISS instruction store."""
