"""Static tables for the music21 corpus importer: collections, composers, Essen terms.

Kept apart from the parsing code so the importer module stays readable. All names are
facts about the corpus that ships in the ``music21`` package.
"""

from __future__ import annotations

# corpus folder -> (artist, album, year, tags). artist None = take the composer from the score.
COLLECTIONS: dict[str, tuple[str | None, str | None, int | None, list[str]]] = {
    "essenFolksong": ("Essen Folksong Collection", "Essen Folksong Collection", None, ["folk song"]),
    "oneills1850": ("O'Neill's Music of Ireland", "O'Neill's Music of Ireland: 1850 Melodies", 1903,
                    ["irish", "traditional", "dance tune"]),
    "ryansMammoth": ("Ryan's Mammoth Collection", "Ryan's Mammoth Collection", 1883,
                     ["traditional", "fiddle tune", "american"]),
    "airdsAirs": ("James Aird", "A Selection of Scotch, English, Irish and Foreign Airs", 1778,
                  ["scottish", "traditional", "air", "fife"]),
    "miscFolk": ("Traditional", "Colonial and Northumbrian folk tunes", None, ["traditional", "folk"]),
    "nottingham-dataset": ("Nottingham Music Database", "Nottingham Music Database", None,
                           ["traditional", "folk", "reel"]),
    "josquin": ("Josquin des Prez", None, None, ["renaissance", "vocal", "polyphony"]),
    "bach": ("Johann Sebastian Bach", "Chorales", None, ["baroque", "chorale", "sacred", "choir"]),
    "palestrina": ("Giovanni Pierluigi da Palestrina", None, None,
                   ["renaissance", "sacred", "mass", "polyphony", "choir"]),
    "monteverdi": ("Claudio Monteverdi", None, None, ["renaissance", "madrigal", "vocal", "italian"]),
    "trecento": (None, "Trecento", None, ["medieval", "trecento", "italian", "vocal"]),
    "beethoven": ("Ludwig van Beethoven", None, None, ["classical", "string quartet", "chamber music"]),
    "mozart": ("Wolfgang Amadeus Mozart", None, None, ["classical", "string quartet", "chamber music"]),
    "haydn": ("Joseph Haydn", None, None, ["classical", "string quartet", "chamber music"]),
    "handel": ("George Frideric Handel", "Rinaldo", 1711, ["baroque", "opera", "aria"]),
    "corelli": ("Arcangelo Corelli", None, None, ["baroque", "trio sonata"]),
    "cpebach": ("Carl Philipp Emanuel Bach", None, None, ["classical", "keyboard", "sonata"]),
    "chopin": ("Frederic Chopin", None, None, ["romantic", "piano", "mazurka"]),
    "schubert": ("Franz Schubert", None, None, ["romantic", "lied", "song"]),
    "schumann_robert": ("Robert Schumann", None, None, ["romantic"]),
    "schumann_clara": ("Clara Schumann", None, None, ["romantic"]),
    "schoenberg": ("Arnold Schoenberg", None, None, ["modern", "piano", "atonal"]),
    "webern": ("Anton Webern", None, None, ["modern", "sacred", "song"]),
    "verdi": ("Giuseppe Verdi", "Rigoletto", 1851, ["romantic", "opera", "aria"]),
    "weber": ("Carl Maria von Weber", None, None, ["romantic", "clarinet", "concertino"]),
    "joplin": ("Scott Joplin", None, 1899, ["ragtime", "piano"]),
    "beach": ("Amy Beach", None, 1915, ["romantic", "song"]),
    "johnson_j_r": ("J. Rosamond Johnson", None, 1900, ["hymn", "song", "african american"]),
    "liliuokalani": ("Liliuokalani", None, 1884, ["hawaiian", "song"]),
    "leadSheet": (None, "Lead sheets", None, ["popular song", "lead sheet"]),
    "lusitano": ("Vicente Lusitano", None, None, ["renaissance", "madrigal"]),
    "ciconia": ("Johannes Ciconia", None, None, ["medieval", "canon"]),
    "luca": ("D. Luca", None, None, ["medieval", "sacred"]),
    "demos": (None, "music21 demos", None, ["example"]),
    "theoryExercises": (None, "Theory exercises", None, ["exercise"]),
}

# Essen collection files (name without trailing digits) -> readable collection name
ESSEN_BOOKS = {
    "altdeu": "Altdeutsche Lieder", "ballad": "Balladen (Deutsches Volksliedarchiv)",
    "boehme": "Boehme, Altdeutsches Liederbuch", "dva": "Deutsches Volksliedarchiv",
    "erk": "Erk, Deutscher Liederhort", "fink": "Fink, Musikalischer Hausschatz",
    "folkHaydn": "Folk songs set by Haydn", "han": "Han Chinese folk songs",
    "irl": "Irish folk songs", "kinder": "Kinderlieder (children's songs)",
    "lot": "Lothringen folk songs", "lux": "Luxembourg folk songs",
    "variant": "Variant collection", "zuccal": "Zuccalmaglio, Deutsche Volkslieder",
    "test": "Essen test set", "testd": "Essen test set", "teste": "Essen test set",
}

# Essen R: genre terms (German, as written) -> English tags
ESSEN_GENRES = {
    "ballade": "ballad", "romanze": "romance", "lied": "song", "liebes - lied": "love song",
    "liebeslied": "love song", "liebeslieder": "love song", "liebe": "love", "tod": "death",
    "erzaehlendes volks - lied": "narrative folk song", "staende -": "trade song", "sage": "legend",
    "klage": "lament", "kinder - lied": "children's song", "kinder -": "children's song",
    "leid": "sorrow", "religioeses lied": "religious song", "religiöses lied": "religious song",
    "mord": "murder ballad", "geistlich": "sacred", "geistliches": "sacred", "religioes": "religious",
    "geistliches, religiöses lied": "religious song", "reigen": "round dance",
    "soldaten - lied": "soldier song", "soldaten -": "soldier song", "kriegs - lied": "war song",
    "verfuehrung": "seduction", "standesunterschied": "class difference", "selbstmord": "suicide",
    "tanz - lied": "dance song", "tanz": "dance", "tanz - spiel": "dance game",
    "sagen - lied": "legend song", "abschieds - lied": "farewell song", "abschied": "farewell",
    "jaeger - lied": "hunting song", "jugend - lied": "youth song", "trink - lied": "drinking song",
    "moral - lied": "moral song", "moral": "moral", "schwangerschaft": "pregnancy",
    "scherz - lied": "humorous song", "scherz": "humour", "adelige als dienstmagd": "noblewoman as maid",
    "betrug": "deceit", "vergebliche werbung": "futile courtship", "ehestands - lied": "marriage song",
    "historisches lied": "historical song", "erzaehlung": "narrative", "heimat - lied": "homeland song",
    "liebes - lust": "love's joy", "lustige romanze": "comic romance", "national": "national song",
    "kinder - spiel": "children's game", "handwerker -": "craftsmen's song",
    "brauchtums - lied": "custom song",
    "studenten -": "student song", "berufslied": "work song", "wander - lied": "hiking song",
    "lyrisches lied": "lyrical song", "geselligkeits -": "social song", "hinrichtung": "execution",
    "wiegen - lied": "lullaby", "jahreszeiten - lied": "seasonal song", "fruehling": "spring",
    "strafe": "punishment", "xiaodiao": "xiaodiao (ditty)", "shange": "shange (mountain song)",
    "haozi": "haozi (work chant)", "wuge": "wuge (dance song)", "kinderlied": "children's song",
    "weihnachts - lied": "christmas song", "oster - lied": "easter song", "marien - lied": "marian song",
    "spinn - lied": "spinning song", "hochzeits - lied": "wedding song", "bettel - lied": "begging song",
    "bauern - lied": "farmer's song", "lied der leid": "song of sorrow", "leid, klage": "lament",
    "lied, leid": "song of sorrow", "tod; kinder - spiel": "children's game",
}

# Essen O: place names (German) -> English tags; continents and unknown markers dropped
ESSEN_PLACES = {
    "deutschland": "germany", "luxemburg": "luxembourg", "lothringen": "lorraine", "frankreich": "france",
    "jugoslawien": "yugoslavia", "polen": "poland", "oesterreich": "austria", "schweiz": "switzerland",
    "irland": "ireland", "niederlande": "netherlands", "ungarn": "hungary", "china": "china",
    "rumaenien": "romania", "udssr": "russia", "russland": "russia", "tschechoslowakei": "czechoslovakia",
    "schweden": "sweden", "ukraine": "ukraine", "italien": "italy", "daenemark": "denmark",
    "gottschee": "gottschee", "schlesien": "silesia", "hessen": "hesse", "brandenburg": "brandenburg",
    "rheinland": "rhineland", "sachsen": "saxony", "flaemisch": "flemish", "pommern": "pomerania",
    "westfalen": "westphalia", "siebenbuergen": "transylvania", "baden": "baden", "tirol": "tyrol",
    "rheinprovinz": "rhine province", "ostpreussen": "east prussia", "galizien": "galicia",
    "steiermark": "styria", "sudetenland": "sudetenland", "nordrhein - westfalen": "north rhine-westphalia",
    "bayern": "bavaria", "elsass": "alsace", "taiwan": "taiwan", "yunnan": "yunnan", "shanbei": "shanbei",
    "hequ": "hequ", "shaanxi": "shaanxi", "shanxi": "shanxi", "mecklenburg": "mecklenburg",
    "norddeutschland": "north germany", "sueddeutschland": "south germany", "thueringen": "thuringia",
    "wuerttemberg": "wuerttemberg", "franken": "franconia", "pfalz": "palatinate", "kroatien": "croatia",
    "estland": "estonia", "lettland": "latvia", "litauen": "lithuania", "england": "england",
}
CONTINENTS = {"europa": "europe", "mitteleuropa": None, "osteuropa": None, "suedosteuropa": None,
              "nordeuropa": None, "westeuropa": None, "suedeuropa": None, "asien": "asia",
              "ostasien": "east asia"}

# normalised ABC R: values
TUNE_TYPES = {"slipjig": "slip jig", "double jig": "jig", "single jig": "jig", "fling": "highland fling",
              "hornpipes": "hornpipe", "reels": "reel", "jigs": "jig", "set dance": "set dance",
              "long dance": "set dance"}
# words in a title that name the tune type (Aird's and Ryan's titles often carry it)
TITLE_TYPES = ("reel", "jig", "hornpipe", "strathspey", "march", "minuet", "waltz", "polka",
               "quick step", "quickstep", "air", "slow air", "lament", "song", "dance", "gavotte",
               "rant", "schottische", "clog", "fling", "country dance", "highland fling", "mazurka")
