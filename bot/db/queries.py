"""All of the bot's SQL, one function per query, grouped by subject in the queries_* modules and
re-exported here. Each is a plain function of a ``Conn`` that runs in the database thread:

    from bot.db import queries as q
    job = await q.get_job(db, 7)                      # the same as: await db.run(q.get_job, 7)
    await db.run_tx(some_function_calling_several_q)  # one BEGIN IMMEDIATE ... COMMIT, one hop
    def some_function_calling_several_q(c: Conn) -> ...: q.get_job(c, 7); q.kv_set(c, "k", "v")
"""

from bot.db.queries_guild import *  # noqa: F401,F403
from bot.db.queries_jobs import *  # noqa: F401,F403
from bot.db.queries_money import *  # noqa: F401,F403
from bot.db.queries_queue import *  # noqa: F401,F403
