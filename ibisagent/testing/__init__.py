"""Offline stand-ins for what the package talks to, for tests, benchmarks and demos: a mock
OpenAI-compatible chat server (`mock_chat_server`) and a tiny random Qwen-VL built from a config
(`tiny_vlm`). Nothing in the runtime path imports them except `train sft/rl`, which builds the
tiny VLM on demand for its tiny configs."""
