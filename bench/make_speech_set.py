"""Build a larger English speech set for the weight-type WER check of issue #3 (Q4 within +1.0).

The real English clips of ../shared/data hold only 117 scored words outside the 88 s noisy clip,
so one word is ~0.9 WER points. This script writes a few thousand reference words, in two parts:

* real-aug: every English clip of ../shared/data/manifest.tsv except the 88 s
  `en_hard-long-noise1-en.wav` (jfk, the two austen clips, LJ001-0001, the noisy funasr clip),
  resampled to 16 kHz and transformed into 15 variants each (the unchanged clip, sox speed and
  tempo changes, white/pink noise at 20/10 dB SNR, reverb, telephone band, GSM codec,
  combinations; see VARIANTS). Transcript = the clip's manifest transcript.
* tts: SENTENCES below (original English text written for this set, numbers spelled out, no
  hyphens or abbreviations), rendered with espeak-ng, one voice (VOICES x VOICE_VARIANTS) and one
  speed (130-190 words per minute) per clip, several sentences per clip joined by 0.3-0.7 s
  pauses into clips of about 15-25 s (always < 30 s, one normal Whisper window); every third
  clip gets white or pink noise at 15 dB SNR.

Noise is Gaussian (pink: 1/f power shaping in the frequency domain), drawn from a generator
seeded by SEED and the output file name, and scaled so that mean(signal^2) / mean(noise^2)
over the whole clip equals the SNR; it is added after the sox effects. A clip whose peak
exceeds 0.99 is scaled down to peak 0.9 before the conversion to 16-bit PCM. sox runs with
-D (no dither) and -R (repeatable), on float32 samples, so every run gives identical files
for the same espeak-ng / sox versions (recorded in VERSIONS).

Output, bench/out/speech_set/ (git-ignored): `<name>.wav` (16 kHz mono PCM16), manifest.tsv
(file, part, seconds, transcript, how) and VERSIONS. Scored by

    python bench/make_speech_set.py [--out bench/out/speech_set]        # ~10 s
    python bench/quant_accuracy.py --set bench/out/speech_set [--threads 1]
"""

from __future__ import annotations

import _blas_env  # noqa: F401  (first: _common's loader imports npasr after NumPy)

# isort: split

import argparse
import csv
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import wave
import zlib
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import DATA, REPO, SR, load_audio_16k, normalize, read_manifest  # noqa: E402

SEED = 20240603
LONG_CLIP = "en_hard-long-noise1-en.wav"

# name -> (sox effects applied to the 16 kHz clip, added noise (kind, SNR dB) or None, GSM codec)
VARIANTS: dict[str, tuple[list[str], tuple[str, float] | None, bool]] = {
    "orig": ([], None, False),
    "speed0.9": (["speed", "0.9", "rate", "16000"], None, False),
    "speed1.1": (["speed", "1.1", "rate", "16000"], None, False),
    "tempo0.85": (["tempo", "-s", "0.85"], None, False),
    "tempo1.2": (["tempo", "-s", "1.2"], None, False),
    "white20": ([], ("white", 20.0), False),
    "white10": ([], ("white", 10.0), False),
    "pink20": ([], ("pink", 20.0), False),
    "pink10": ([], ("pink", 10.0), False),
    "reverb": (["reverb", "50", "50", "100"], None, False),
    "reverb-big": (["reverb", "90", "30", "100", "100", "40"], None, False),
    "phone": (["sinc", "300-3400", "rate", "8000", "rate", "16000"], None, False),
    "gsm": (["sinc", "300-3400", "rate", "8000"], None, True),
    "tempo1.1-reverb-white15": (
        ["tempo", "-s", "1.1", "reverb", "40", "50", "80"],
        ("white", 15.0),
        False,
    ),
    "speed0.95-phone-pink15": (
        ["speed", "0.95", "sinc", "300-3400", "rate", "8000", "rate", "16000"],
        ("pink", 15.0),
        False,
    ),
}

VOICES = [
    "en-us",
    "en-gb",
    "en-gb-scotland",
    "en-029",
    "en-gb-x-rp",
    "en-us-nyc",
    "en-gb-x-gbclan",
    "en-gb-x-gbcwmd",
]
VOICE_VARIANTS = ["", "+m3", "+f2", "+klatt", "+f4", "+m1"]
CLIP_MIN_S, CLIP_MAX_S = 15.0, 25.0

# Original sentences (everyday, nature, science, history, instructions, dialogue, work, stories).
# American spelling, no words spelled differently in British English, no digits, no hyphenated
# or optionally joined compounds, no abbreviations: the normalised reference is unambiguous.
SENTENCES = """
The kettle started to whistle just as the phone rang in the hallway.
Please remember to water the plants on the balcony while I am away.
We walked along the river until the sun went down behind the hills.
She bought fresh bread, a bag of apples and a small jar of honey.
The bus was late again, so most of the passengers decided to walk.
My brother keeps his bicycle in the garden shed next to the old wheelbarrow.
It rained all morning, but the afternoon turned out warm and bright.
Could you pass me the salt and pepper from the other end of the table?
The children built a tall tower of wooden blocks and then knocked it over.
He forgot his umbrella on the train and arrived home completely soaked.
The family next door is painting their fence a pale shade of yellow.
The library closes early on Sundays, so we should leave before lunch.
I usually drink a cup of tea in the morning and coffee after dinner.
The old dog slept by the fire while the wind howled outside.
There is a small bakery on the corner that sells the best cinnamon rolls in town.
After the meeting, we went to a quiet restaurant near the station.
She folded the laundry and put the clean towels in the cupboard.
The market was crowded with people buying vegetables, flowers and cheese.
Turn off the lights when you leave the room, because electricity is expensive.
My grandmother taught me how to bake bread without using a recipe.
The car would not start this morning, so I called my sister for a ride.
We need more milk, eggs, butter and a loaf of brown bread.
The cat jumped onto the shelf and watched the birds in the tree.
He spent the whole afternoon fixing the leaking tap in the kitchen.
The new shoes looked nice in the shop, but they hurt my feet after an hour.
Every evening the old man feeds the ducks at the pond in the park.
I left my keys on the kitchen table and locked myself out of the house.
The train to the coast leaves at noon and arrives in the early evening.
Our team lost the game, but everyone agreed that it was a lot of fun.
She wrapped the present in blue paper and tied it with a silver ribbon.
The baby finally fell asleep after we sang the same song three times.
Please close the window, there is a cold wind coming from the garden.
The streets were quiet on Sunday morning, and most of the shops were closed.
We packed sandwiches, fruit and a large bottle of water for the long walk.
My phone battery died halfway through the conversation with my mother.
The apartment has two bedrooms, a small kitchen and a view of the river.
He washed the dishes while she dried them and put them back on the shelves.
The farmer sold us a basket of strawberries picked that very morning.
I could not find a parking space anywhere near the hospital.
The dentist said I should brush my teeth more carefully in the evening.
They planted tomatoes, beans and potatoes in the field behind the barn.
A strong smell of fresh coffee drifted from the open door of the little shop.
My cousin moved to a village in the mountains where the winters are very long.
We stayed at home and watched an old film because the weather was terrible.
The postman left a heavy parcel with the family across the street.
Remember to bring a warm jacket, the evenings near the lake can be chilly.
The supermarket was out of bananas, so I bought pears instead.
His alarm clock rang very early, but he stayed in bed for another hour.
The garden looked beautiful after the gardener trimmed the hedges and cut the grass.
She sat on the porch reading a novel and listening to the rain.
Water boils at a lower temperature on a high mountain because the air pressure is lower.
Plants use sunlight, water and carbon dioxide to make sugar and release oxygen.
The moon has no atmosphere, so its sky looks black even during the day.
Sound travels faster through water than it does through air.
A magnet attracts iron and nickel, but it has no effect on copper or glass.
The heart pumps blood through a network of arteries, veins and tiny capillaries.
Light from the sun takes about eight minutes to reach the surface of the earth.
Volcanoes form where melted rock rises from deep beneath the surface of the planet.
Bacteria can double their numbers very quickly when food and warmth are available.
The human brain contains billions of nerve cells that communicate through electrical signals.
Ice floats on water because it is less dense than the liquid around it.
Earthquakes happen when large plates of rock suddenly slip past one another.
A rainbow appears when sunlight is bent and split by drops of water in the air.
Chemists measure acidity on a scale where pure water sits right in the middle.
Astronomers use large telescopes to study the light from distant galaxies.
The speed of a chemical reaction usually increases when the temperature rises.
Bees carry pollen from flower to flower, which helps many crops produce fruit.
Copper is a good conductor of electricity, which is why it is used in wires.
The ocean absorbs a large share of the heat that reaches the surface of the planet.
Vaccines train the immune system to identify a virus before an infection occurs.
Mars appears red because its soil contains a great deal of iron oxide.
Glaciers move slowly down valleys, grinding the rock beneath them into fine powder.
Sugar dissolves more quickly in hot tea than in cold water.
Every living cell contains genetic instructions written in a long chain of molecules.
Thunder is the sound made by air expanding rapidly around a bolt of lightning.
Some birds fly thousands of miles every year to spend the winter in warmer places.
A simple lever lets a person lift a heavy stone with much less effort.
Salt water freezes at a lower temperature than fresh water.
Scientists repeat their experiments many times to make sure the results are reliable.
The leaves of the tree turn yellow and red when the days grow shorter in autumn.
Whales are mammals, so they must come to the surface regularly to breathe air.
Friction between the wheels and the road helps a car stop safely.
The solar system formed from a huge cloud of gas and dust long ago.
Our bodies need vitamins and minerals in small amounts to stay healthy.
Electric current flows through a circuit only when the path is complete.
Clouds form when warm, moist air rises and cools high above the ground.
Fossils show us what plants and animals looked like millions of years ago.
The tides are caused mainly by the pull of the moon on the oceans.
Diamonds and graphite are both made of carbon, yet they are very different materials.
Mosquitoes are attracted by the carbon dioxide that people breathe out.
A glass prism splits white light into a rainbow of separate bands.
The stomach uses strong acid to break down food before it reaches the intestines.
Engineers test bridges carefully to find out how much weight they can safely carry.
In space, astronauts float because they are falling around the earth together with their ship.
Some frogs can survive being frozen during the winter and thaw out in the spring.
The microscope allowed early scientists to see living things too small for the naked eye.
Wind turbines turn the energy of moving air into electricity.
Our sense of smell is closely linked to memory and emotion.
When a star runs out of fuel, it may collapse and explode in a brilliant flash.
Rivers slowly carve deep canyons by carrying away sand and small stones.
The ancient Egyptians built enormous pyramids as tombs for their kings.
For centuries, merchants carried silk and spices along long trade routes across Asia.
The printing press made books cheaper and helped spread new ideas across Europe.
Roman engineers built roads and aqueducts that are still standing today.
Many castles were built on hills so that defenders could see enemies approaching from far away.
The first steam engines were used to pump water out of deep coal mines.
Explorers sailed across unknown oceans with only the stars to guide them.
The ancient Greeks held athletic games to celebrate their gods.
During the industrial revolution, many families moved from farms to growing cities.
Medieval monks copied books by hand, which could take many months for a single volume.
The invention of the telegraph allowed messages to cross continents in minutes.
Archaeologists discovered the remains of an old village buried beneath the sand.
Great libraries in the ancient world collected scrolls from every known land.
The first railways changed how people moved and how goods reached the markets.
Farmers in early civilizations learned to build canals to water their fields.
Many old cities were surrounded by thick stone walls to keep out invaders.
The discovery of penicillin saved millions of lives in the following decades.
Sailors once believed that monsters lived in the deepest parts of the sea.
The old bridge was built by hand from stones carried up from the river.
Kings and queens often married to form alliances between powerful families.
The first flying machines were made of wood, wire and cloth.
Ancient astronomers tracked the movements of the planets without any telescopes.
Long ago, messengers on horseback carried letters between distant towns.
The museum displays tools, pottery and coins found at the ancient site.
Paper was first made from plant material in China long before it reached Europe.
Many languages spoken today share roots with an ancient tongue from the distant past.
The great fire destroyed much of the city, but it was rebuilt with wider streets.
Early settlers had to clear forests and build their own houses before winter.
The telescope changed how people understood the place of the earth in the universe.
Traders used shells, salt and metal as money before coins became common.
The old lighthouse guided ships safely past the dangerous rocks for many years.
Writing was invented to keep records of grain, animals and taxes.
The walls of the ancient temple were covered with carvings of animals and warriors.
In the past, news of a battle could take weeks to reach the capital.
Scholars spent years translating old manuscripts written in forgotten languages.
The first public schools taught children to read, write and count.
Caravans of camels crossed the desert carrying gold, cloth and salt.
The railway station was once the busiest building in the whole town.
A young inventor spent many nights in his workshop trying to build a better lamp.
Ancient sailors built ships from wood and sealed the gaps with tar.
First, heat the oven and lightly grease a large baking tray.
Mix the flour and sugar in a bowl, then slowly add the melted butter.
To reset the device, hold down the power button until the light starts blinking.
Turn left at the second traffic light and continue straight past the church.
Before you begin, make sure that all of the parts listed in the box are present.
Insert the card into the slot with the arrow facing up and wait for the beep.
Stir the soup gently and let it simmer over a low heat until the vegetables are soft.
Attach the shelf to the wall using the screws provided in the small bag.
Save your work often, and keep a copy of important files on a separate drive.
Wash your hands with soap and warm water before handling any food.
Fold the paper in half, then fold the corners toward the middle.
Take one tablet with a glass of water after each meal.
If the alarm sounds, leave the building by the nearest exit and do not use the lift.
Enter your password, then press the green button to confirm your choice.
Cut the onions into thin slices and fry them until they turn golden brown.
Check the oil and the water before starting a long journey.
Place the seeds in the soil, cover them lightly and water them every day.
Follow the path through the forest until you reach a wooden gate.
Unplug the machine before you clean it, and never use water near the motor.
Write your name clearly at the top of each page of the exam.
Gently remove the old filter and slide the new one into place.
Keep the medicine in a cool, dry place out of reach of children.
Press and hold both buttons at the same time to lock the screen.
Add a pinch of salt to the water before you put the pasta in the pot.
Tighten each bolt a little at a time so that the wheel sits evenly.
When you reach the top of the stairs, the office is the third door on the right.
Let the paint dry completely before applying a second coat.
Read all of the questions carefully before you start writing your answers.
Store the cheese in the fridge and wrap it tightly in paper.
To change the language, open the settings menu and choose the option you want.
Rinse the rice several times until the water runs clear.
Do not open the door of the oven while the cake is still baking.
Hang the wet clothes outside on a sunny day and they will dry quickly.
Put the heavy boxes at the bottom and the light ones on top.
Measure the window twice before you buy new curtains.
Lift with your legs, not your back, when you pick up something heavy.
Cover the bowl with a clean towel and leave the dough to rise in a warm place.
Sign the form at the bottom and return it to the front desk.
Sharpen the knife regularly, because a dull blade is more dangerous than a sharp one.
Switch off the engine and wait for the attendant to fill the tank.
Are you coming to the party tonight? I think so, if I finish my work in time.
Excuse me, do you know where the nearest post office is? Yes, just around the corner.
I am sorry I am late, the traffic was terrible this morning.
What would you like for dinner? Something simple, maybe soup and bread.
Did you remember to lock the back door? I am not sure, let me go and check.
How was your holiday? It was wonderful, but far too short.
Can I help you find something? Yes, I am looking for a book about gardening.
Would you mind opening the window? It is getting rather warm in here.
Where did you put the scissors? They should be in the top drawer of the desk.
I have never seen so much snow in my whole life!
Is this seat taken? No, please sit down, there is plenty of room.
Thank you so much for your help, I really could not have done it without you.
Let us meet at the entrance of the museum early in the morning.
Why is the baby crying? I think she is hungry, it is almost time for her bottle.
Have you finished reading the book I lent you? Not yet, but I am enjoying it.
What time does the film start? I believe it begins right after sunset.
Could you speak a little more slowly, please? I did not catch the last part.
We should leave now if we want to catch the last bus home.
Do you take sugar in your coffee? Just a little, thank you.
I think we are lost. Let us ask someone for directions.
That was the best meal I have eaten in a very long time.
Who left the muddy boots in the hallway? It was probably your brother.
Are you sure this is the right address? The house looks completely empty.
Please tell the doctor that I will be there early tomorrow morning.
I can hardly believe how quickly the summer went by.
Would you like to join us for a walk along the beach this evening?
Hold on, I need to find my glasses before I can read the menu.
The doctor will see you now. Please follow me down the corridor.
If you need anything at all, just give me a call.
Why did the chicken cross the road? To get to the other side, of course.
The fox crept silently through the tall grass toward the sleeping rabbits.
A thick fog rolled in from the sea and covered the little fishing village.
The mountain path was steep and narrow, with a sharp drop on one side.
In the desert, the days are scorching hot but the nights can be freezing cold.
A family of deer came out of the woods to graze at the edge of the meadow.
The waterfall crashed onto the rocks below, sending a cloud of spray into the air.
Bright flowers covered the hillside in shades of purple, white and gold.
The owl sat motionless on the branch, watching the field below for mice.
The island can only be reached by a small boat that sails twice a week.
Snow covered the valley, and the only sound was the crunch of our boots.
The river flooded after the storm, and several roads were closed for days.
Tall pine trees lined both sides of the road leading up to the cabin.
At dawn, the lake was perfectly still and reflected the mountains like a mirror.
The storm knocked down power lines and left the whole town in darkness.
Seals were lying on the rocks, warming themselves in the afternoon sun.
The manager asked everyone to send their reports before the end of the week.
Our office moved to a larger building with a view of the park.
The computer crashed just before I saved the document, so I lost an hour of work.
She was promoted after leading the project to a successful finish.
The printer on the second floor is out of paper again.
We hired two new engineers to help with the design of the software.
The meeting was postponed because half of the team was away.
He writes code in the morning and answers questions from customers in the afternoon.
The company plans to open a new factory near the border next year.
Please update the spreadsheet with the latest sales figures from last month.
The phone kept ringing all day, and I barely had time to eat lunch.
Our network was slow this morning because of a problem with the main server.
The new camera takes sharp pictures even in very dim light.
A good teacher explains difficult ideas with simple examples.
The students worked in small groups to solve the puzzle before the bell rang.
The crowd cheered loudly when the striker scored in the final minute of the match.
She runs along the beach every morning before going to work.
The chess match lasted for hours, and neither player was willing to accept a draw.
We rented a small boat and rowed across the lake to the island.
The swimming pool is closed for cleaning until the end of the month.
He played the piano for hours every day before the concert.
The climbers reached the summit just before the clouds rolled in.
Our local team has not won the championship in a very long time.
The orchestra played a beautiful piece that made several people in the audience cry.
I enjoy painting landscapes, especially the sea on a stormy day.
A bowl of warm soup is the perfect meal on a cold winter evening.
Fresh fruit and vegetables should make up a large part of your diet.
Getting enough sleep is just as important for your health as regular exercise.
The chef added garlic, lemon and fresh herbs to the fish before grilling it.
Drinking plenty of water helps your body stay cool on hot days.
Once upon a time, a poor fisherman caught a golden fish that could speak.
The old map showed a hidden path leading to a cave behind the waterfall.
When the door creaked open, a cold breeze swept through the empty hall.
The detective studied the footprints in the mud and smiled quietly to himself.
Nobody in the village knew where the stranger had come from or why he stayed.
The princess escaped from the tower by climbing down a rope made of old sheets.
The captain ordered the crew to lower the sails before the storm arrived.
At midnight the clock struck, and every candle in the house went out at once.
The boy found a small puppy shivering under a bench in the rain.
Years later, she returned to the town where she grew up and hardly knew the streets.
"""


def sentences() -> list[str]:
    out = [s.strip() for s in SENTENCES.strip().splitlines() if s.strip()]
    for s in out:
        n = len(normalize(s).split())
        if not 8 <= n <= 25 or re.search(r"[0-9\-\t]", s):
            raise SystemExit(f"bad sentence ({n} words): {s}")
    if len(set(out)) != len(out):
        raise SystemExit("duplicate sentences")
    return out


# --- audio helpers ------------------------------------------------------------------------------


def _rng(name: str) -> np.random.Generator:
    return np.random.default_rng([SEED, zlib.crc32(name.encode())])


def sox(
    x: np.ndarray, effects: list[str], sr_in: int = SR, sr_out: int = SR, fmt_out: str = "f32"
) -> np.ndarray:
    """float32 mono samples through `sox effects` (raw float32 in and out, no dither)."""
    raw = ["-t", "raw", "-e", "floating-point", "-b", "32", "-c", "1"]
    cmd = ["sox", "-D", "-R", "-V1", *raw, "-r", str(sr_in), "-"]
    if fmt_out == "gsm":  # encode to GSM 06.10 (8 kHz) and decode again
        cmd += ["-t", "gsm", "-r", "8000", "-c", "1", "-", *effects]
        gsm = subprocess.run(
            cmd, input=x.astype("<f4").tobytes(), capture_output=True, check=True
        ).stdout
        back = [
            "sox",
            "-D",
            "-R",
            "-V1",
            "-t",
            "gsm",
            "-r",
            "8000",
            "-c",
            "1",
            "-",
            *raw,
            "-r",
            str(sr_out),
            "-",
            "rate",
            str(sr_out),
        ]
        out = subprocess.run(back, input=gsm, capture_output=True, check=True).stdout
    else:
        cmd += [*raw, "-r", str(sr_out), "-", *effects]
        out = subprocess.run(
            cmd, input=x.astype("<f4").tobytes(), capture_output=True, check=True
        ).stdout
    return np.frombuffer(out, "<f4").astype(np.float32)


def noise(n: int, kind: str, rng: np.random.Generator) -> np.ndarray:
    w = rng.standard_normal(n)
    if kind == "white":
        return w
    if kind != "pink":
        raise ValueError(kind)
    spec = np.fft.rfft(w)
    f = np.arange(spec.size, dtype=np.float64)
    f[0] = 1.0
    spec /= np.sqrt(f)  # power ~ 1/f
    spec[0] = 0.0
    return np.fft.irfft(spec, n)


def add_noise(x: np.ndarray, kind: str, snr_db: float, rng: np.random.Generator) -> np.ndarray:
    nz = noise(x.size, kind, rng)
    ps, pn = float(np.mean(x.astype(np.float64) ** 2)), float(np.mean(nz**2))
    return (x + nz * np.sqrt(ps / (pn * 10 ** (snr_db / 10)))).astype(np.float32)


def write_wav(path: Path, x: np.ndarray) -> float:
    peak = float(np.max(np.abs(x))) if x.size else 0.0
    if peak > 0.99:
        x = x * (0.9 / peak)
    pcm = np.clip(np.round(x * 32767.0), -32768, 32767).astype("<i2")
    with wave.open(str(path), "wb") as f:
        f.setnchannels(1)
        f.setsampwidth(2)
        f.setframerate(SR)
        f.writeframes(pcm.tobytes())
    return pcm.size / SR


def espeak(text: str, voice: str, speed: int, tmp: Path) -> np.ndarray:
    """espeak-ng's 22050 Hz output, resampled to 16 kHz float32."""
    out = tmp / "tts.wav"
    subprocess.run(
        ["espeak-ng", "-v", voice, "-s", str(speed), "-w", str(out), text],
        check=True,
        capture_output=True,
    )
    with wave.open(str(out), "rb") as f:
        sr, n = f.getframerate(), f.getnframes()
        x = np.frombuffer(f.readframes(n), "<i2").astype(np.float32) / 32768.0
    return sox(x, ["rate", "-h", str(SR)], sr_in=sr)


# --- the two parts ------------------------------------------------------------------------------


def real_aug(out: Path) -> list[dict[str, str]]:
    rows = []
    clips = [
        r for r in read_manifest().values() if r["language"] == "en" and r["file"] != LONG_CLIP
    ]
    for r in clips:
        x = load_audio_16k(DATA / r["file"])
        stem = Path(r["file"]).stem
        for vname, (effects, nz, gsm) in VARIANTS.items():
            name = f"aug_{stem}_{vname}.wav"
            y = sox(x, effects, fmt_out="gsm" if gsm else "f32") if effects or gsm else x
            how = [f"sox {' '.join(effects)}" if effects else "resampled to 16 kHz only"]
            if gsm:
                how.append("GSM 06.10 encode+decode, back to 16 kHz")
            if nz is not None:
                y = add_noise(y, nz[0], nz[1], _rng(name))
                how.append(f"{nz[0]} noise {nz[1]:g} dB SNR")
            secs = write_wav(out / name, y)
            rows.append(
                {
                    "file": name,
                    "part": "real-aug",
                    "seconds": f"{secs:.3f}",
                    "transcript": r["transcript"].strip(),
                    "how": f"{r['file']}: {'; '.join(how)}",
                }
            )
    return rows


def tts(out: Path, tmp: Path) -> list[dict[str, str]]:
    rng = np.random.default_rng(SEED)
    todo = [sentences()[i] for i in rng.permutation(len(sentences()))]
    rows: list[dict[str, str]] = []
    k = 0
    while todo:
        voice = VOICES[k % len(VOICES)] + VOICE_VARIANTS[int(rng.integers(len(VOICE_VARIANTS)))]
        speed = int(rng.integers(130, 191))
        parts = [np.zeros(int(0.3 * SR), np.float32)]
        texts: list[str] = []
        total = parts[0].size / SR
        while todo and total < CLIP_MIN_S:
            y = espeak(todo[0], voice, speed, tmp)
            gap = np.zeros(int(rng.uniform(0.3, 0.7) * SR), np.float32)
            if texts and total + (y.size + gap.size) / SR > CLIP_MAX_S:
                break
            parts += [y, gap]
            texts.append(todo.pop(0))
            total += (y.size + gap.size) / SR
        x = np.concatenate(parts)
        how = f"espeak-ng -v {voice} -s {speed}, {len(texts)} sentences"
        name = f"tts_{k:03d}.wav"
        if k % 3 == 2:
            kind = "white" if k % 2 else "pink"
            x = add_noise(x, kind, 15.0, _rng(name))
            how += f"; {kind} noise 15 dB SNR"
        secs = write_wav(out / name, x)
        if secs >= 30.0:
            raise SystemExit(f"{name}: {secs:.1f} s, over one 30 s window")
        rows.append(
            {
                "file": name,
                "part": "tts",
                "seconds": f"{secs:.3f}",
                "transcript": " ".join(texts),
                "how": how,
            }
        )
        k += 1
    return rows


def versions() -> str:
    def first_line(cmd: list[str]) -> str:
        p = subprocess.run(cmd, capture_output=True, text=True, check=True)
        return (p.stdout or p.stderr).strip().splitlines()[0]

    return (
        "\n".join(
            [
                first_line(["espeak-ng", "--version"]),
                first_line(["sox", "--version"]),
                f"numpy {np.__version__}, python {platform.python_version()}, seed {SEED}",
            ]
        )
        + "\n"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=REPO / "bench" / "out" / "speech_set")
    args = ap.parse_args()
    for tool in ("sox", "espeak-ng"):
        if shutil.which(tool) is None:
            sys.exit(f"{tool} is not installed (apt-get install sox espeak-ng)")
    out: Path = args.out
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    with tempfile.TemporaryDirectory() as tmp:
        rows = real_aug(out) + tts(out, Path(tmp))
    with open(out / "manifest.tsv", "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(
            f, ["file", "part", "seconds", "transcript", "how"], delimiter="\t", lineterminator="\n"
        )
        w.writeheader()
        w.writerows(rows)
    (out / "VERSIONS").write_text(versions())
    for part in ("real-aug", "tts"):
        sel = [r for r in rows if r["part"] == part]
        words = sum(len(normalize(r["transcript"]).split()) for r in sel)
        secs = sum(float(r["seconds"]) for r in sel)
        print(f"{part}: {len(sel)} clips, {secs:.0f} s, {words} reference words")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
