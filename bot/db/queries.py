"""All of the bot's SQL, one function per query, grouped by subject in the queries_* modules and
re-exported here: ``from bot.db import queries as q`` then ``await q.get_job(db, 7)``. Every function
takes an Executor: the Database (each statement commits alone) or a transaction from
``db.transaction()``."""

from bot.db.queries_guild import *  # noqa: F401,F403
from bot.db.queries_jobs import *  # noqa: F401,F403
from bot.db.queries_money import *  # noqa: F401,F403
from bot.db.queries_queue import *  # noqa: F401,F403
