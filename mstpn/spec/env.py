"""The Pong environment: the one definition of which frames the agent sees.

Training, evaluation and play must see the same frames. Plain ``ALE/Pong-v5`` returns the last
frame of each 4-frame skip, with sticky actions (0.25) and no no-op starts: the standard
evaluation protocol, and the choice here. ale-py's native ``AtariVectorEnv`` is faster for
training; :func:`make_vector_env` configures it to match (no max-pooling of the last two frames,
no no-op starts, no FIRE on reset, the same skip and stickiness), so both give the same kind of
frame. Checked (``tests/test_eval.py``): without sticky actions, the same seed and the same
actions, the two give identical raw frames step for step. ``AtariVectorEnv``'s defaults differ in
three ways, each of which changes the frames: ``maxpool=True``, ``noop_max=30`` and
``use_fire_reset=True`` (it presses FIRE at every reset, which shifts Pong's serve).

ale-py ships its ROMs, so nothing is downloaded.
"""

from __future__ import annotations

__all__ = ["ENV_ID", "FRAMESKIP", "STICKY", "FRAME_RATE", "real_time_decisions_per_s", "make_env",
           "make_vector_env", "RAM_BALL_X", "RAM_BALL_Y", "RAM_OUR_PADDLE", "RAM_PADDLE_COLUMN",
           "RAM_Y_TOP", "RAM_Y_BOTTOM", "RAM_CENTRE_OFFSET", "PADDLE_PIXEL_COLUMNS",
           "MAX_FRAMES", "FREEZE_FRAME", "past_freeze"]

ENV_ID = "ALE/Pong-v5"
#: Emulated frames per decision.
FRAMESKIP = 4
#: Probability that the emulator repeats the previous action instead of the chosen one.
STICKY = 0.25
#: Frames per second of the Atari 2600 (NTSC): the game's real time.
FRAME_RATE = 60

# Pong's RAM map, for the privileged teachers (measured: /work/shared/notes/pong.md).
#: RAM addresses of the ball's x and y and of our (right) paddle's y.
RAM_BALL_X, RAM_BALL_Y, RAM_OUR_PADDLE = 49, 54, 51
#: Our paddle's column in RAM x units (pixel x ~ 140 + 48.5).
RAM_PADDLE_COLUMN = 188.0
#: The band the ball bounces in, in RAM y units.
RAM_Y_TOP, RAM_Y_BOTTOM = 46.0, 203.0
#: The paddle is centred on the ball when ``ram[RAM_OUR_PADDLE] ~ ram[RAM_BALL_Y] - 7``.
RAM_CENTRE_OFFSET = 7.0
#: On screen: the first pixel column of the opponent's paddle and of ours, each 4 pixels wide
#: (measured with ale-py 0.12.1; ours is RAM_PADDLE_COLUMN less the RAM's offset of about 48).
PADDLE_PIXEL_COLUMNS = (16, 140)

#: v5's limit: an episode is truncated after this many emulated frames.
MAX_FRAMES = 108_000
#: The emulated frame of an episode from which Pong no longer plays (measured with ale-py
#: 0.12.1, the step that ends at this frame: step 16,303 at frameskip 4). In a game still going
#: there, the ball vanishes, the opponent's score in RAM drops (to 1 in the game measured), ALE
#: pays the drop as that one step's reward (+11 there), and no point is played again until
#: :data:`MAX_FRAMES` truncates the episode. Other Atari games are reported to stop at
#: about 65,536 frames too (openai/gym#833). docs/model-card.md, "The frozen games".
FREEZE_FRAME = 65_212


def past_freeze(env) -> bool:
    """Whether a :func:`make_env` episode has reached :data:`FREEZE_FRAME`."""
    return env.unwrapped.ale.getEpisodeFrameNumber() >= FREEZE_FRAME


def real_time_decisions_per_s(frameskip: int = FRAMESKIP) -> float:
    """Decisions per second that keep up with the game in real time: 15 at frameskip 4."""
    if frameskip < 1:
        raise ValueError(f"frameskip must be at least 1, not {frameskip}")
    return FRAME_RATE / frameskip


def make_env(sticky: float = STICKY, frameskip: int = FRAMESKIP, render_mode: str | None = None):
    """A single ``ALE/Pong-v5`` with grayscale observations (210x160 uint8).

    Parameters
    ----------
    sticky : float
        Repeat-action probability; 0 makes the game deterministic for a given seed.
    frameskip : int
        Emulated frames per step.
    render_mode : str, optional
        ``"rgb_array"`` to record the game.
    """
    import ale_py
    import gymnasium

    gymnasium.register_envs(ale_py)
    return gymnasium.make(
        ENV_ID,
        obs_type="grayscale",
        frameskip=frameskip,
        repeat_action_probability=sticky,
        full_action_space=False,
        render_mode=render_mode,
    )


def make_vector_env(num_envs: int, threads: int = 2, sticky: float = STICKY,
                    frameskip: int = FRAMESKIP, autoreset_mode: str = "NextStep",
                    stop_before_freeze: bool = True):
    """ale-py's native vector env, configured to give the frames of :func:`make_env`.

    Parameters
    ----------
    num_envs, threads : int
        Sub-environments and emulator threads.
    sticky, frameskip
        As for :func:`make_env`.
    autoreset_mode : {"NextStep", "SameStep", "Disabled"}
        ale-py's autoreset mode: with ``"SameStep"`` the observation returned with a terminal
        step is already the first frame of the next episode.
    stop_before_freeze : bool
        Truncate each episode at its last step before :data:`FREEZE_FRAME` (step 16,302 at
        frameskip 4) instead of v5's :data:`MAX_FRAMES`, so that training never sees the freeze's
        spurious reward nor the frozen screen after it. ``False`` keeps v5's limit.
    """
    from ale_py.vector_env import AtariVectorEnv

    return AtariVectorEnv(
        game="pong",
        num_envs=num_envs,
        num_threads=threads,
        img_height=210,
        img_width=160,
        grayscale=True,
        stack_num=1,
        frameskip=frameskip,
        maxpool=False,
        noop_max=0,
        repeat_action_probability=sticky,
        reward_clipping=False,
        use_fire_reset=False,
        autoreset_mode=autoreset_mode,
        # FREEZE_FRAME was measured as the end of a step at frameskip FRAMESKIP: the freeze
        # falls in that step's frames.
        max_num_frames_per_episode=(FREEZE_FRAME - FRAMESKIP) if stop_before_freeze
        else MAX_FRAMES,
    )
