"""The LangGraph state machine: state, nodes and wiring (see graph.py)."""
