from qasr.daemon.server.openai_api import resolve_language
from qasr.engine.align.words import normalize_language
from qasr.engine.languages import ISO_639_1, code_of_language, language_of_code


def test_codes_of_every_form_give_the_official_name():
    assert language_of_code("en") == language_of_code("ENG") == language_of_code("en-US") == "English"
    assert language_of_code("zh_CN") == language_of_code("cmn") == "Chinese"
    assert language_of_code("xx") is None and code_of_language("Klingon") is None
    assert code_of_language("Filipino") == "fil" and code_of_language("Cantonese") == "yue"


def test_the_aligner_and_the_servers_read_the_same_table():
    for code, name in ISO_639_1.items():
        assert normalize_language(code) == name
        assert resolve_language(code, [name]) == name
