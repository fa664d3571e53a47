"""Everything that speaks Discord: the bot, the sink, the pacer, the endpoint redirection, the
interaction helpers, the rendering of embeds and texts, and the cogs. Nothing outside this package
imports discord."""
